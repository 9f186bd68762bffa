"""Configuration -> objects: the one place where flag values become splits, samplers, losses,
miners and methods (OML's registry -> config -> object flow).

The configuration is a namespace of flag values (``config.make`` or train/main.py's flags);
what is built here receives objects and plain values. Every component's parameters are flags
generated from the registries by :func:`component_flags`, so a new loss, miner, sampler or
method brings its flags with it:

=================================  =============================================================
``--loss_<loss>_<param>``          a loss's constructor parameter (for the main ``--loss``)
``--miner_<miner>_<param>``        a miner's
``--sampler_<sampler>_<param>``    a batch sampler's (``--batch_sampler``)
``--<method>_<param>``             a method's (``--method``), help from its ``flag_help``
``--<method>_<role>_<loss flag>``  every main-loss flag (``loss``, ``loss_<loss>_<param>``,
                                   ``miner``, ``proxy_initializer``, ...) again for each further
                                   loss role the method declares (``Method.loss_roles``)
=================================  =============================================================

Parameters the shared flags or the builders provide (``num_classes``, ``distance``,
``seed``, ...) are not generated; see the ``*_SHARED`` sets.
"""
from dataclasses import dataclass

import numpy as np

from dmltf import data, losses, methods, miners, regularizers
from dmltf.data import samplers
from dmltf.models import backbones, synchronize_batchnorm
from dmltf.registry import constructor_parameters, hyperparameters

# Constructor parameters with a shared flag, or set by the builders, per family.
LOSS_SHARED = {"num_classes", "embedding_dim", "distance", "miner", "reduction", "lr_multiplier", "initializer",
               "ortho_weight", "embedding_regularizer", "embedding_reg_weight", "weight_regularizer",
               "weight_reg_weight", "name", "dtype"}
MINER_SHARED = {"distance", "name", "dtype"}
SAMPLER_SHARED = {"classes_per_batch", "samples_per_class"}
METHOD_SHARED = {"seed", "name", "dtype"}


@dataclass
class DatasetInfo:
    num_classes: int  # training classes (labels are remapped to 0..num_classes-1)
    input_shape: tuple


def component_flags(loss_flags):
    """{flag name: (default, help)} of every registered component's parameters (see the module
    docstring); ``loss_flags`` are the shared main-loss flags (``--loss``, ``--miner``, ...),
    repeated with a prefix for each method loss role."""
    flags = {}

    def put(flag, default, help_text):
        if flag in flags:  # e.g. a method parameter named like one of its loss role's flags
            raise ValueError(f"two component parameters make the flag --{flag}")
        flags[flag] = (default, help_text)

    def add(prefix, registry, shared):
        for name, cls in registry.items():
            for param, default in hyperparameters(cls, shared).items():
                put(f"{prefix}_{name}_{param}", default, f"{cls.__name__}({param}=...)")

    add("loss", losses.LOSSES, LOSS_SHARED)
    add("miner", miners.MINERS, MINER_SHARED)
    add("sampler", samplers.SAMPLERS, SAMPLER_SHARED)
    main_loss = {**loss_flags, **{k: v for k, v in flags.items() if not k.startswith("sampler_")}}
    for name, cls in methods.METHODS.items():
        for param, default in hyperparameters(cls, METHOD_SHARED).items():
            put(f"{name}_{param}", default, cls.flag_help.get(param, f"{cls.__name__}({param}=...)"))
        for role, spec in cls.loss_roles.items():
            unknown = sorted(set(spec.defaults) - set(main_loss))
            if unknown:
                raise ValueError(f"method {name!r}, loss role {role!r}: unknown loss flags {', '.join(unknown)}")
            for flag, (default, help_text) in main_loss.items():
                put(f"{name}_{role}_{flag}", spec.defaults.get(flag, default), f"{role} ({spec.help}): {help_text}")
    return flags


def component_kwargs(cfg, prefix, cls, shared):
    """Constructor kwargs of ``cls`` from the flags ``<prefix>_<param>`` present in ``cfg``.

    Matched by parameter name, not by flag prefix: ``loss_margin_*`` must not pick up
    ``loss_margin_sample_mining_*``.
    """
    values = vars(cfg)
    return {p: values[f"{prefix}_{p}"] for p in hyperparameters(cls, shared) if f"{prefix}_{p}" in values}


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
    preset = data.augmentation.AUGMENTATIONS.lookup(cfg.augmentation).default_size  # a cropping preset's size
    size = cfg.image_size or (preset[0] if preset else None)
    channels = data.preprocessing.output_channels(preprocessing(cfg), split.image_shape[-1] if split.image_shape else 3)
    if size:
        return (size, size, channels)
    if split.image_shape is None:
        raise ValueError("JPEG-encoded splits need --image_size or a cropping --augmentation preset")
    return (*split.image_shape[:2], channels)


def preprocessing(cfg):
    return cfg.preprocessing or backbones.get_spec(cfg.backbone).preprocessing


def build_loss(cfg, name, num_classes, embedding_dim, prefix=""):
    """Loss ``name`` (None: the ``--<prefix>loss`` flag's) with its ``--<prefix>loss_<name>_*``
    flags and the shared ``--<prefix>`` loss flags that apply; a method's loss role has the
    prefix ``<method>_<role>_``, the main loss none.

    For the flag's own loss, a ``--<prefix>miner`` or ``--<prefix>distance`` that neither it nor
    a loss it wraps takes is an error: a run must not silently train without it."""
    flag = lambda suffix: getattr(cfg, prefix + suffix)  # noqa: E731
    configured = name is None  # a wrapper's inner loss is named; its wrapper does the check
    name = name or flag("loss")
    cls = losses.get_class(name)
    kwargs = component_kwargs(cfg, f"{prefix}loss_{name}", cls, LOSS_SHARED)
    takes_pair_flags = issubclass(cls, losses.PairLoss)
    for key, value in kwargs.items():  # a wrapper's inner loss (e.g. xbm's) is built the same way
        if key == "loss" and value in losses.LOSSES:
            kwargs[key] = build_loss(cfg, value, num_classes, embedding_dim, prefix)
            takes_pair_flags = takes_pair_flags or isinstance(kwargs[key], losses.PairLoss)
    for suffix in ("miner", "distance"):
        if configured and not takes_pair_flags and flag(suffix):
            raise ValueError(f"--{prefix}{suffix}={flag(suffix)} does not apply to --{prefix}loss={name}: "
                             f"{cls.__name__} is not a pair-based loss; leave --{prefix}{suffix} empty")
    if issubclass(cls, losses.PairLoss):
        if flag("miner"):
            kwargs["miner"] = build_miner(cfg, flag("miner"), prefix)
        if flag("distance"):
            kwargs["distance"] = flag("distance")
    shared = {"num_classes": num_classes, "embedding_dim": embedding_dim, "initializer": flag("proxy_initializer"),
              "ortho_weight": flag("proxy_ortho_weight"), "reduction": flag("reduction"),
              "lr_multiplier": lr_multiplier(flag("loss_lr_multiplier"), f"--{prefix}loss_lr_multiplier")}
    accepted = set(constructor_parameters(cls))
    given = lambda k, v: v is not None if k == "lr_multiplier" else bool(v)  # noqa: E731  (0 freezes)
    kwargs.update({k: v for k, v in shared.items() if k in accepted and given(k, v)})
    if configured:
        kwargs.update(regularizer_kwargs(cfg, prefix, name, cls))
    return cls(**kwargs)


def build_miner(cfg, name, prefix=""):
    """Miner ``name`` with its ``--<prefix>miner_<name>_*`` flags; one whose required parameters
    have no flag (e.g. maximum_loss's scoring loss object) is an error naming them."""
    cls = miners.get_class(name)
    required = [p for p, param in constructor_parameters(cls).items()
                if param.default is param.empty and p not in MINER_SHARED
                and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)]
    if required:
        raise ValueError(f"--{prefix}miner={name} needs {', '.join(required)}, which no flag sets: build it in "
                         f"Python (dmltf.miners.get({name!r}, ...)) and pass it to the loss")
    return cls(**component_kwargs(cfg, f"{prefix}miner_{name}", cls, MINER_SHARED))


def regularizer_kwargs(cfg, prefix, name, cls):
    """The ``--<prefix>{embedding,weight}_regularizer`` flags (specs ``name[:key=value,...]``) and
    their factors as loss kwargs; a weight regularizer for a loss without weights is an error."""
    kwargs = {}
    for kind in ("embedding", "weight"):
        spec = getattr(cfg, f"{prefix}{kind}_regularizer")
        if not spec:
            continue
        if kind == "weight" and not hasattr(cls, "proxy_rows"):
            raise ValueError(f"--{prefix}weight_regularizer={spec} does not apply to --{prefix}loss={name}: "
                             f"{cls.__name__} has no class weights or proxies")
        try:
            kwargs[f"{kind}_regularizer"] = regularizers.get(spec)
        except (TypeError, ValueError) as e:
            raise ValueError(f"--{prefix}{kind}_regularizer={spec}: {e}") from None
        kwargs[f"{kind}_reg_weight"] = float(getattr(cfg, f"{prefix}{kind}_reg_weight"))
    return kwargs


def lr_multiplier(value, flag="--loss_lr_multiplier"):
    """A ``--loss_lr_multiplier`` value: None (empty: the loss's reference multiplier, e.g. 100
    for proxy losses) or the number given, used as is (0 freezes the loss's weights).

    >>> lr_multiplier(""), lr_multiplier("0"), lr_multiplier(2.5)
    (None, 0.0, 2.5)
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{flag}={value!r}: expected a number, or empty for the loss's reference multiplier") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"{flag}={value!r}: expected a finite number >= 0 (0 freezes the loss's weights)")
    return number


def build_sampler(cfg):
    """The ``--batch_sampler`` (empty: the method's default) with its ``--sampler_<name>_*`` flags."""
    name = cfg.batch_sampler or methods.get_class(cfg.method).default_sampler
    cls = samplers.get_class(name)
    return cls(cfg.classes_per_batch, cfg.samples_per_class,
               **component_kwargs(cfg, f"sampler_{name}", cls, SAMPLER_SHARED))


def build_method(cfg, info):
    """The ``--method`` from its ``--<method>_*`` flags and the run's parts."""
    cls = methods.get_class(cfg.method)

    def make_loss(role, embedding_dim):
        return build_loss(cfg, None, info.num_classes, embedding_dim, "" if role is None else f"{cfg.method}_{role}_")

    parts = methods.Parts(
        num_classes=info.num_classes, input_shape=info.input_shape, seed=cfg.seed, backbone=cfg.backbone,
        backbone_weights=cfg.backbone_weights or None, pooling=cfg.pooling, embedding_dim=cfg.embedding_dim,
        embedding_bn=cfg.embedding_bn, l2_normalize=cfg.l2_normalize, freeze_bn=cfg.freeze_bn,
        sync_batchnorm=cfg.sync_batchnorm, make_loss=make_loss)
    method = cls.from_parts(parts, **component_kwargs(cfg, cfg.method, cls, METHOD_SHARED))
    if cfg.sync_batchnorm:
        synchronize_batchnorm(method)
    return method
