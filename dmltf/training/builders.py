"""Configuration -> objects: the one place where flag values are resolved into splits, losses,
miners and methods (OML's registry -> config -> object flow).
"""
from dataclasses import dataclass

import numpy as np

import config as config_lib
from dmltf import data, losses, methods, miners
from dmltf.methods import dvml  # noqa: F401  (registers the "dvml" method)
from dmltf.models import backbones, build_embedding_model, synchronize_batchnorm

# Crop size of each augmentation preset when --image_size is 0.
PRESET_SIZES = {"dmltf": 224, "torch_imagenet": 224, "dvml": 227}


@dataclass
class DatasetInfo:
    num_classes: int  # training classes (labels are remapped to 0..num_classes-1)
    input_shape: tuple


def load_digits_splits(protocol):
    """scikit-learn's bundled digits as uint8 8x8x1 images (0-16 scaled to 0-255).

    ``stratified``: a stratified 50/50 split of the samples (every class in both halves, fixed
    seed); ``zero_shot``: train on digits 0-4, test on 5-9.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    if protocol == "stratified":
        train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.5, stratify=labels, random_state=0)
    elif protocol == "zero_shot":
        train_idx, test_idx = np.flatnonzero(labels < 5), np.flatnonzero(labels >= 5)
    else:
        raise ValueError(f"--digits_protocol must be stratified or zero_shot, got {protocol!r}")
    return (data.ArraySplit(images[np.sort(train_idx)], labels[np.sort(train_idx)]),
            data.ArraySplit(images[np.sort(test_idx)], labels[np.sort(test_idx)]))


def load_splits(cfg):
    """(train split, eval split) named by the flags."""
    if cfg.dataset == "digits":
        return load_digits_splits(cfg.digits_protocol)
    dataset = data.open_dataset(cfg.dataset)
    return dataset.split(cfg.train_split), dataset.split(cfg.eval_split)


def input_shape(cfg, split):
    size = cfg.image_size or PRESET_SIZES.get(cfg.augmentation)
    channels = data.preprocessing.output_channels(preprocessing(cfg), split.image_shape[-1] if split.image_shape else 3)
    if size:
        return (size, size, channels)
    if split.image_shape is None:
        raise ValueError("JPEG-encoded splits need --image_size or a cropping --augmentation preset")
    return (*split.image_shape[:2], channels)


def preprocessing(cfg):
    return cfg.preprocessing or backbones.get_spec(cfg.backbone).preprocessing


def build_loss(cfg, name, num_classes, embedding_dim):
    """Loss ``name`` with its --loss_<name>_* flags and the shared loss flags that apply."""
    cls = losses.get_class(name)
    kwargs = config_lib.component_kwargs(cfg, "loss", name)
    for key, value in kwargs.items():  # a wrapper's inner loss (e.g. xbm's) is built the same way
        if key == "loss" and value in losses.names():
            kwargs[key] = build_loss(cfg, value, num_classes, embedding_dim)
    if issubclass(cls, losses.PairLoss):
        if cfg.miner:
            kwargs["miner"] = miners.get(cfg.miner, **config_lib.component_kwargs(cfg, "miner", cfg.miner))
        if cfg.distance:
            kwargs["distance"] = cfg.distance
    accepted = _init_params(cls)
    shared = {"num_classes": num_classes, "embedding_dim": embedding_dim,
              "initializer": cfg.proxy_initializer or None, "ortho_weight": cfg.proxy_ortho_weight or None}
    kwargs.update({k: v for k, v in shared.items() if k in accepted and v is not None})
    if cfg.reduction:
        kwargs["reduction"] = cfg.reduction
    if cfg.loss_lr_multiplier:
        kwargs["lr_multiplier"] = cfg.loss_lr_multiplier
    return cls(**kwargs)


def _init_params(cls):
    import inspect

    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names.update(inspect.signature(klass.__init__).parameters)
    return names


def build_embedding(cfg, info):
    return build_embedding_model(
        cfg.backbone, info.input_shape, pooling=cfg.pooling, embedding_dim=cfg.embedding_dim,
        embedding_bn=cfg.embedding_bn, l2_normalize=cfg.l2_normalize,
        backbone_weights=cfg.backbone_weights or None, freeze_bn=cfg.freeze_bn,
    )


@methods.register("metric_learner")
def build_metric_learner(cfg, info):
    embedding_model = build_embedding(cfg, info)
    dim = embedding_model.output_shape[-1]
    return methods.MetricLearner(embedding_model, build_loss(cfg, cfg.loss, info.num_classes, dim))


def build_method(cfg, info):
    method = methods.get(cfg.method)(cfg, info)
    if cfg.sync_batchnorm:
        synchronize_batchnorm(method)
    return method
