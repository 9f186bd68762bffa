"""The defaults of every flag of dmltf's command line, in one readable file (read by train/).

``GROUPS`` lists the hand-written flag groups (name: (default, help)). Each parameter of a
registered loss, miner, sampler and method is a flag too, generated from the component's
constructor so that its default is written once, next to the formula it belongs to
(Revisiting-DML style names): ``--loss_<loss>_<param>`` (e.g. ``--loss_triplet_margin=0.2``),
``--miner_<miner>_<param>``, ``--sampler_<sampler>_<param>``, ``--<method>_<param>`` (e.g.
``--dvml_mode``) and a method's further loss roles (``--<method>_<role>_loss`` ...); the
rules are in ``dmltf/training/builders.py``. ``python train/main.py --helpfull`` lists them all.
The library never imports this file: it receives the namespace that :func:`make` returns.

Programmatic use (tests, notebooks) goes through :func:`make`, which returns the same
namespace ``train/main.py`` builds from its flags:

    >>> import config
    >>> cfg = config.make(loss="triplet", loss_triplet_margin=0.2)
    >>> cfg.loss_triplet_margin, cfg.epochs
    (0.2, 30)
"""
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
        "batch_sampler": ("", "Batch sampler (dmltf.data.samplers): balanced (P classes x K images), random "
                          "(plain shuffled batches of P*K images, Fuel's ShuffledScheme, the DVML reference), ...; "
                          "its parameters are --sampler_<name>_<param>; empty: the method's default."),
        "augmentation": ("none", "Augmentation preset: none, dmltf, torch_imagenet, dvml."),
        "preprocessing": ("", "Input normalisation; empty: the backbone's own."),
        "image_size": (0, "Training/eval crop size; 0: the preset's or the native size."),
        "eval_batch_size": (256, "Batch size when embedding the evaluation split."),
    },
    "model": {
        "method": ("metric_learner", "Training system (dmltf.methods)."),
        "backbone": ("small_cnn", "Backbone (dmltf.models.backbones)."),
        "backbone_weights": ("", "Local weights file of the backbone (see pretrained/README.md)."),
        "pooling": ("avg", "Global pooling: avg, max, avg+max, gem, with options mode:option=value,...: "
                    "dropout=<rate> (before pooling, training only), layernorm=true (after it, no affine)."),
        "embedding_dim": (128, "Embedding size; 0 keeps the pooled feature."),
        "embedding_bn": (False, "BatchNorm after the embedding Dense layer."),
        "l2_normalize": (True, "L2-normalise the embedding in the model."),
        "freeze_bn": (False, "Freeze the backbone's BatchNorm (statistics and affine), as PyTorch eval()."),
        "sync_batchnorm": (False, "BatchNorm statistics over the global batch across replicas (as on one device)."),
    },
    "loss": {
        "loss": ("proxy_anchor", "Loss (dmltf.losses); its parameters are --loss_<name>_<param>."),
        "miner": ("", "Miner for pair-based losses (dmltf.miners); empty: the loss's default."),
        "distance": ("", "Distance for pair-based losses; empty: the loss's default."),
        "reduction": ("", "mean, mean_nonzero or sum; empty: the loss's default."),
        "loss_lr_multiplier": ("", "Learning-rate multiplier of the loss's weights (proxies, centres): a number "
                               "is used as is (0 freezes them); empty: the loss's reference multiplier "
                               "(e.g. 100 for proxy losses)."),
        "proxy_initializer": ("", "Initialiser of proxies/class weights; empty: the loss's default."),
        "proxy_ortho_weight": (0.0, "Weight of dml-tf's proxy orthogonality regulariser (proxy losses)."),
        "embedding_regularizer": ("", "Regularizer of the embeddings (dmltf.regularizers, row-wise: lp, zero_mean) "
                                  "as name[:key=value,...], e.g. lp:p=2,power=1; empty: none."),
        "embedding_reg_weight": (1.0, "Factor of --embedding_regularizer."),
        "weight_regularizer": ("", "Regularizer of the loss's class weights / proxies (dmltf.regularizers) as "
                               "name[:key=value,...], e.g. regular_face; empty: none."),
        "weight_reg_weight": (1.0, "Factor of --weight_regularizer."),
        "loss_scope": ("global", "global: the loss of the global batch, gathered across replicas (as one device); "
                       "replica: each replica's loss on its own share, averaged (PaddlePaddle's per-GPU losses)."),
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
        "schedule": ("constant", "constant, step, multistep, cosine (per epoch) or piecewise (per iteration: "
                     "--lr_boundaries)."),
        "lr_step_size": (10, "step: epochs between decays."),
        "lr_gamma": (0.5, "step / multistep / piecewise: decay factor."),
        "lr_milestones": ([], "multistep: epochs at which the rate decays."),
        "lr_boundaries": ([], "piecewise: iterations at which the rate is multiplied by --lr_gamma "
                          "(PaddlePaddle's lr_steps)."),
        "lr_warmup_epochs": (0.0, "Linear learning-rate warm-up length in epochs."),
        "warmup_epochs": (0, "Epochs during which only --warmup_groups train."),
        "warmup_groups": (["head", "loss"], "Groups trained during the warm-up epochs."),
        "lr_schedule_after_warmup": (False, "The schedule counts epochs from the end of --warmup_epochs (GeDML "
                                     "steps no scheduler during its warm-up); otherwise from the start."),
        "clip_grad_value": (0.0, "Clip each element of a group's global-batch gradient to +-value (0: off)."),
        "clip_grad_norm": (0.0, "Clip the global norm of each group's global-batch gradient (0: off)."),
        "clip_grad_steps": (0, "Clip only at the first N iterations of the run (0: at every one). GeDML's "
                            "clipper clips once (1): its parameter generator is exhausted by the first call."),
    },
    "train": {
        "epochs": (30, "Training epochs."),
        "max_steps_per_epoch": (0, "Cap on the steps of an epoch (0: the sampler's full epoch)."),
        "max_steps": (0, "If > 0, train this many iterations in all (across epochs), then stop."),
        "init_from": ("", "Start from the embedding model of an earlier run: its run directory (best, else last "
                      "checkpoint) or an exported .keras file; losses and optimizers start anew."),
        "seed": (0, "Seed of initialisation, sampling and augmentation; a CPU run repeats exactly."),
        "strategy": ("default", "default, mirrored or multi_worker (TF_CONFIG)."),
        "cpu_replicas": (0, "Split the CPU into N logical devices (test the mirrored path on CPU)."),
        "precision": ("float32", "float32, mixed_float16 or mixed_bfloat16."),
        "jit_compile": ("auto", "Compile the training step's forward and backward pass and the embedding step with "
                        "XLA: true, false, or auto (on when TensorFlow sees a GPU; off on CPU, where bench/backbone_speed.py "
                        "measured the compiled step 1.3-6x slower on 2 cores, after 50-130 s of compiling at 224 px). "
                        "A step XLA cannot compile says so once and runs without it. With XLA, TensorFlow's op "
                        "determinism stays off (XLA has no deterministic max-pool gradient), so reruns are not bit-exact."),
        "logdir": ("runs/demo", "Checkpoints, TensorBoard logs and exports."),
        "resume": (False, "Continue from the last checkpoint in --logdir."),
        "overwrite": (False, "Start a new run in a --logdir that already holds one (the old run is moved aside)."),
        "resume_fallback": (False, "With --resume: if the last checkpoint is damaged, continue from the one before."),
        "nonfinite": ("stop", "What a non-finite loss or gradient does: stop (one error line naming the step) or "
                      "skip (the step is not applied, as loss scaling does)."),
        "eval_every": (5, "Evaluate every N epochs (and after the last); 0: only at the end."),
        "eval_every_steps": (0, "If > 0, also evaluate every N iterations."),
        "eval_metrics": (["recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision",
                          "map@r", "nmi", "ami", "f1"], "Metrics (dmltf.evaluation)."),
        "eval_distance": ("euclidean", "kNN distance for evaluation: euclidean or cosine."),
        "eval_l2_normalize": (True, "L2-normalise embeddings before evaluation."),
        "eval_kmeans": ("faiss", "k-means of the clustering metrics (nmi, ami, f1): backend[:key=value,...], faiss "
                        "(niter=20, nredo, seed) or sklearn (n_init, max_iter, tol, init, algorithm, random_state; "
                        "unset: the installed scikit-learn's defaults); seeds default to --seed. See "
                        "dmltf/evaluation/clustering.py."),
        "eval_average": ("micro", "Retrieval metrics averaged over the queries (micro) or over the classes, each "
                         "class's queries first (macro, TF Similarity's average='macro')."),
        "best_metric": ("map@r", "Metric that selects the best checkpoint."),
        "tb_neighbours": (8, "Queries shown with their top-5 neighbours in TensorBoard (0: none)."),
        "tb_projector_points": (2000, "Embeddings written for the TensorBoard projector (0: none)."),
        "export": (True, "Export the embedding model (.keras and SavedModel) at the end."),
        "checkpoint_every": (1, "Write the training checkpoint every N epochs, i.e. every N x steps-per-epoch "
                             "iterations (the sampler's epoch or --max_steps_per_epoch; inside epochs: "
                             "--checkpoint_every_steps); the last epoch's and the best (best/) are always kept; --resume "
                             "continues from the latest written, repeating the epochs after it exactly."),
        "checkpoint_every_steps": (0, "If > 0, also write the training checkpoint every N iterations inside epochs "
                                   "(numbered by global step); --resume continues an epoch with its next batch."),
        "early_stop_patience": (0, "Stop when --best_metric has not improved for N consecutive evaluations "
                                "(checked at epoch ends; GeDML's manager: 10 or 15 on recall@1); 0: off."),
        "save_embeddings": (False, "Write the final evaluation's embeddings and labels to <logdir>/embeddings.h5 "
                            "(the format of train/infer.py's .h5 output)."),
        "threads": (0, "TensorFlow's intra-op and inter-op thread counts (0: TensorFlow's default, all cores); "
                    "set before TensorFlow starts its runtime."),
        "verbose": (False, "Keep TensorFlow's native start-up notices on stderr (dropped by default). Read from "
                    "the command line itself before TensorFlow starts, so a flagfile cannot set it."),
        "progress": ("auto", "bar, epoch, none; auto: a bar on a terminal, a line per epoch otherwise."),
        "baselines": (False, "Also evaluate raw pixels and the untrained model (printed in one table)."),
    },
}

def all_flags():
    """{flag name: (default, help)}: ``GROUPS`` and every component's generated flags."""
    from dmltf.training.builders import component_flags

    flags = {}
    for group in GROUPS.values():
        flags.update(group)
    generated = component_flags(GROUPS["loss"])
    clash = sorted(set(flags) & set(generated))
    if clash:
        raise ValueError(f"component flags clash with config.GROUPS: {', '.join(clash)}")
    flags.update(generated)
    return flags


def coerce(value, default):
    """A flag value in its default's type, as absl parses a flagfile's text: a string for a bool,
    int or float flag is parsed (``"true"``, ``"0"``, ``"1e-4"``), a string for a list flag is
    split at commas (``"a,b"`` -> ``["a", "b"]``), and list elements of a tuple/list default of
    numbers (absl's list flags hold strings) become numbers."""
    if isinstance(value, str) and isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {value!r}")
        return value.lower() in ("true", "1")
    if isinstance(value, str) and isinstance(default, (int, float)):
        return type(default)(value)
    if isinstance(default, (list, tuple)):
        value = [v for v in value.split(",") if v] if isinstance(value, str) else list(value)
        kinds = {type(v) for v in default}
        if kinds and kinds <= {int, float}:
            kind = float if float in kinds else int
            return [kind(v) for v in value]
    return value


def make(**overrides):
    """The full configuration namespace: defaults with ``overrides`` applied."""
    flags = all_flags()
    unknown = sorted(set(overrides) - set(flags))
    if unknown:
        raise ValueError(f"Unknown configuration keys: {', '.join(unknown)}")
    values = {name: coerce(default, default) for name, (default, _) in flags.items()}
    values.update({name: coerce(value, flags[name][0]) for name, value in overrides.items()})
    return types.SimpleNamespace(**values)
