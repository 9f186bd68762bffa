"""Convert Cadene's BN-Inception state dict (``bn_inception-52deb4733.pth`` or
``bn_inception-239d2248.pth``, pretrainedmodels) to the weights of dmltf's ``bn_inception``.

Layout: ``<module>.weight`` / ``.bias`` per conv (out, in, h, w) and ``<module>_bn.weight`` /
``.bias`` / ``.running_mean`` / ``.running_var`` per BatchNorm, with the module names of
``pretrainedmodels/models/bninception.py``; ``last_linear.*`` and ``num_batches_tracked`` are
ignored. Reading a .pth needs torch (a state dict saved as .npz does not).

    python -m pretrained.bn_inception_from_torch bn_inception-52deb4733.pth bn_inception.weights.h5
"""
from pretrained import common

if __name__ == "__main__":
    common.main(__doc__.splitlines()[0], "bn_inception", common.read_state_dict, common.torch_layout)
