"""Convert the DVML reference's ``tf_ckpt_from_caffe.mat`` (BVLC Caffe GoogLeNet) to the weights
of dmltf's ``googlenet`` / ``googlenet_dvml`` backbones.

Layout, as ``Xun-Yang/Deep-Variational-Metric-Learning: lib/GoogleNet_Model.py`` reads it: one
entry per Caffe convolution, ``<caffe name>`` (e.g. ``conv1/7x7_s2``, ``inception_3a/1x1``) with
the kernel in Caffe's (out, in, h, w) order — the reference transposes it (2, 3, 1, 0) to HWIO —
and ``<caffe name>_bias`` (flattened). Other keys (the classifier) are ignored.

    python -m pretrained.googlenet_from_caffe tf_ckpt_from_caffe.mat googlenet.weights.h5
"""
from dmltf.models.googlenet import caffe_conv_keys, keras_layer_name
from pretrained import common

_KEYS = {keras_layer_name(k): k for k in caffe_conv_keys()}


def caffe_mat_layout(layer):
    key = _KEYS.get(layer.name)
    if key is None:
        raise common.WeightFileError(f"no Caffe key for layer {layer.name!r}")
    return [(key, "kernel"), (f"{key}_bias", "vector")]


if __name__ == "__main__":
    common.main(__doc__.splitlines()[0], "googlenet", common.read_mat, caffe_mat_layout)
