"""Convert a torchvision ResNet-50 state dict (``resnet50-0676ba61.pth``, or the older
``resnet50-19c8e357.pth``) to the weights of dmltf's ``resnet50_torch``.

Layout: torchvision's module paths (``conv1.weight``, ``bn1.running_var``,
``layer1.0.conv2.weight``, ``layer2.0.downsample.0.weight``, ...); ``fc.*`` and
``num_batches_tracked`` are ignored. Reading a .pth needs torch (a state dict saved as .npz
does not).

    python -m pretrained.resnet50_from_torch resnet50-0676ba61.pth resnet50_torch.weights.h5
"""
from pretrained import common

if __name__ == "__main__":
    common.main(__doc__.splitlines()[0], "resnet50_torch", common.read_state_dict, common.torch_layout)
