"""The defaults of every flag of dmltf, in one readable file.

``GROUPS`` lists the hand-written flag groups (name: (default, help)). Each loss and miner
parameter is a flag too, generated from the component's constructor so that its default is
written once, next to the formula it belongs to (Revisiting-DML style names):
``--loss_<loss>_<param>`` (e.g. ``--loss_triplet_margin=0.2``) and
``--miner_<miner>_<param>``. ``python train/main.py --helpfull`` lists them all.

Programmatic use (tests, notebooks) goes through :func:`make`, which returns the same
namespace ``train/main.py`` builds from its flags:

    >>> import config
    >>> cfg = config.make(loss="triplet", loss_triplet_margin=0.2)
    >>> cfg.loss_triplet_margin, cfg.epochs
    (0.2, 30)
"""
import inspect
import types

GROUPS = {
    "data": {
        "dataset": ("digits", "An HDF5 file or TFRecord directory written by a datasets/ converter, "
                    "or 'digits' (scikit-learn's bundled 8x8 digits)."),
        "train_split": ("train", "Split used for training."),
        "eval_split": ("test", "Split used for evaluation."),
        "digits_protocol": ("stratified", "digits only: 'stratified' (a stratified 50/50 split of the "
                            "samples, every class in both halves) or 'zero_shot' (train 0-4, test 5-9)."),
        "classes_per_batch": (8, "P: classes per training batch (global, across replicas)."),
        "samples_per_class": (4, "K: images per class in a training batch."),
        "batch_sampler": ("balanced", "balanced: P classes x K images; random: plain shuffled batches of P*K "
                          "images, each image once per epoch (Fuel's ShuffledScheme, the DVML reference)."),
        "augmentation": ("none", "Augmentation preset: none, dmltf, torch_imagenet, dvml."),
        "preprocessing": ("", "Input normalisation; empty: the backbone's own."),
        "image_size": (0, "Training/eval crop size; 0: the preset's or the native size."),
        "eval_batch_size": (256, "Batch size when embedding the evaluation split."),
    },
    "model": {
        "method": ("metric_learner", "Training system (dmltf.methods)."),
        "backbone": ("small_cnn", "Backbone (dmltf.models.backbones)."),
        "backbone_weights": ("", "Local weights file of the backbone (see pretrained/README.md)."),
        "pooling": ("avg", "Global pooling: avg, max, avg+max, gem."),
        "embedding_dim": (128, "Embedding size; 0 keeps the pooled feature."),
        "embedding_bn": (False, "BatchNorm after the embedding Dense layer."),
        "l2_normalize": (True, "L2-normalise the embedding in the model."),
        "freeze_bn": (False, "Freeze the backbone's BatchNorm (statistics and affine), as PyTorch eval()."),
        "sync_batchnorm": (False, "BatchNorm statistics over the global batch across replicas (as on one device)."),
    },
    "dvml": {
        "dvml_mode": ("paper", "paper (GeDML's reading: reconstruction reaches the encoder in phase 2) or "
                      "reference (the Xun-Yang TF port's behaviour and quirks; see dmltf/methods/dvml.py)."),
        "dvml_samples": (0, "T, reparameterised samples per image; 0: the mode's (paper 20, reference 1)."),
        "dvml_lambdas_phase1": (["1", "1", "0.1", "1"], "lambda1..4 (KL, reconstruction, synthetic, invariant) "
                                "in phase 1."),
        "dvml_lambdas_phase2": (["0.8", "1", "0.2", "0.8"], "lambda1..4 in phase 2."),
        "dvml_phase1_epochs": (1, "Phase 1 lasts this many epochs (when --dvml_phase1_steps is 0)."),
        "dvml_phase1_steps": (0, "If > 0, phase 1 lasts this many training steps instead."),
        "dvml_decoder_units": (512, "Hidden width of the decoder (embedding -> hidden -> backbone feature)."),
        "dvml_recon_reduction": ("mean", "Paper-mode reconstruction: mean = GeDML's MSE (mean over samples, "
                                 "batch and features), sample_sum = 1/(T B) sum ||x - x_hat||^2, norm = "
                                 "1/(T B) sum ||x - x_hat|| (the paper's printed formula)."),
        "dvml_weight_decay": (5e-3, "reference mode: 5e-3 * sum ||v||^2 / 2 over the encoder's non-BN "
                              "variables, inside the invariant term."),
    },
    "loss": {
        "loss": ("proxy_anchor", "Loss (dmltf.losses); its parameters are --loss_<name>_<param>."),
        "miner": ("", "Miner for pair-based losses (dmltf.miners); empty: the loss's default."),
        "distance": ("", "Distance for pair-based losses; empty: the loss's default."),
        "reduction": ("", "mean, mean_nonzero or sum; empty: the loss's default."),
        "loss_lr_multiplier": (0.0, "Learning-rate multiplier of the loss's weights; 0: the reference's "
                               "(freeze them with --group_lrs=loss:0)."),
        "proxy_initializer": ("", "Initialiser of proxies/class weights; empty: the loss's default."),
        "proxy_ortho_weight": (0.0, "Weight of dml-tf's proxy orthogonality regulariser (proxy losses)."),
    },
    "optim": {
        "optimizer": ("adamw", "adam, adamw or sgd."),
        "lr": (1e-3, "Base learning rate."),
        "weight_decay": (1e-4, "Weight decay of every group (see --group_weight_decays)."),
        "weight_decay_mode": ("decoupled", "decoupled (AdamW / Keras) or l2 (added to the gradient, "
                              "as PyTorch Adam(weight_decay) and SGD)."),
        "momentum": (0.9, "SGD momentum."),
        "adam_epsilon": (1e-7, "Adam epsilon (ProxyNCA++ uses 1.0, SoftTriple 0.01)."),
        "group_lr_multipliers": ([], "Per-group multipliers, e.g. backbone:0.1,loss:100 "
                                 "(default: each method's own, e.g. the loss's reference multiplier)."),
        "group_lrs": ([], "Per-group absolute learning rates, e.g. decoder:1e-2 (override multipliers)."),
        "group_weight_decays": ([], "Per-group weight decay, e.g. loss:0."),
        "schedule": ("constant", "constant, step, multistep or cosine (all per epoch)."),
        "lr_step_size": (10, "step: epochs between decays."),
        "lr_gamma": (0.5, "step / multistep: decay factor."),
        "lr_milestones": ([], "multistep: epochs at which the rate decays."),
        "lr_warmup_epochs": (0.0, "Linear learning-rate warm-up length in epochs."),
        "warmup_epochs": (0, "Epochs during which only --warmup_groups train."),
        "warmup_groups": (["head", "loss"], "Groups trained during the warm-up epochs."),
        "clip_grad_value": (0.0, "Clip each gradient element to +-value (0: off)."),
        "clip_grad_norm": (0.0, "Clip each group's gradient global norm (0: off)."),
    },
    "train": {
        "epochs": (30, "Training epochs."),
        "max_steps_per_epoch": (0, "Cap on the steps of an epoch (0: the sampler's full epoch)."),
        "seed": (0, "Seed of initialisation, sampling and augmentation; a CPU run repeats exactly."),
        "strategy": ("default", "default, mirrored or multi_worker (TF_CONFIG)."),
        "cpu_replicas": (0, "Split the CPU into N logical devices (test the mirrored path on CPU)."),
        "precision": ("float32", "float32, mixed_float16 or mixed_bfloat16."),
        "logdir": ("runs/demo", "Checkpoints, TensorBoard logs and exports."),
        "resume": (False, "Continue from the last checkpoint in --logdir."),
        "eval_every": (5, "Evaluate every N epochs (and after the last); 0: only at the end."),
        "eval_metrics": (["recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision",
                          "map@r", "nmi", "ami", "f1"], "Metrics (dmltf.evaluation)."),
        "eval_distance": ("euclidean", "kNN distance for evaluation: euclidean or cosine."),
        "eval_l2_normalize": (True, "L2-normalise embeddings before evaluation."),
        "best_metric": ("map@r", "Metric that selects the best checkpoint."),
        "tb_neighbours": (8, "Queries shown with their top-5 neighbours in TensorBoard (0: none)."),
        "tb_projector_points": (2000, "Embeddings written for the TensorBoard projector (0: none)."),
        "export": (True, "Export the embedding model (.keras and SavedModel) at the end."),
        "progress": ("auto", "bar, epoch, none; auto: a bar on a terminal, a line per epoch otherwise."),
        "baselines": (False, "Also evaluate raw pixels and the untrained model (printed in one table)."),
    },
}

# Constructor parameters that have their own shared flag above, or are set by the trainer.
_SHARED_PARAMS = {"self", "num_classes", "embedding_dim", "distance", "miner", "reduction",
                  "lr_multiplier", "initializer", "ortho_weight", "name", "dtype", "kwargs"}


def _own_params(cls):
    """Plain-typed constructor parameters of ``cls`` itself (bases have shared flags)."""
    params = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in _SHARED_PARAMS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if isinstance(p.default, (bool, int, float, str)):
            params[p.name] = p.default
    return params


def component_flags():
    """{flag name: (default, help)} for every loss and miner parameter."""
    from dmltf import losses, miners

    flags = {}
    for kind, registry in (("loss", losses), ("miner", miners)):
        for name in registry.names():
            cls = registry.get_class(name)
            for param, default in _own_params(cls).items():
                flags[f"{kind}_{name}_{param}"] = (default, f"{cls.__name__}({param}=...)")
    return flags


def all_flags():
    flags = {}
    for group in GROUPS.values():
        flags.update(group)
    flags.update(component_flags())
    return flags


def make(**overrides):
    """The full configuration namespace: defaults with ``overrides`` applied."""
    flags = all_flags()
    unknown = sorted(set(overrides) - set(flags))
    if unknown:
        raise ValueError(f"Unknown configuration keys: {', '.join(unknown)}")
    values = {name: (list(default) if isinstance(default, list) else default) for name, (default, _) in flags.items()}
    values.update(overrides)
    return types.SimpleNamespace(**values)


def component_kwargs(cfg, kind, name):
    """Constructor kwargs of component ``name`` (kind 'loss' or 'miner') from the namespace.

    Matched by parameter name, not by prefix: ``loss_margin_*`` must not pick up
    ``loss_margin_sample_mining_*``.
    """
    from dmltf import losses, miners

    cls = (losses if kind == "loss" else miners).get_class(name)
    values = vars(cfg)
    return {p: values[f"{kind}_{name}_{p}"] for p in _own_params(cls) if f"{kind}_{name}_{p}" in values}


def parse_group_map(entries, what):
    """['backbone:0.1', 'loss:100'] -> {'backbone': 0.1, 'loss': 100.0}."""
    out = {}
    for entry in entries:
        group, sep, value = entry.partition(":")
        try:
            out[group.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--{what}: expected entries like name:value, got {entry!r}")
    return out
