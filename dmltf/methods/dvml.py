"""DVML: Deep Variational Metric Learning (Lin, Duan, Dong, Lu, Zhou, ECCV 2018).

References: the paper; ``zbr17/GeDML src/gedml/core/collectors/_old_code/dvml_collector.py``
(``iteration_collectors/`` in earlier trees), ``core/models/basic_models/mlp.py`` and
``examples/config/links/_old_links/link_dvml.yaml`` with its ``param/`` YAML files (the authors'
lab's reading: T = 20, lambdas, phases, heads, decoder ``BatchNormMLP [E, 512, F]``, L_m); the TF
port ``Xun-Yang/Deep-Variational-Metric-Learning`` (``main.py``, ``parameters.py``,
``lib/nn_Ops.py``, ``lib/Losses.py``); METHODS.md section 1. Training length, evaluation cadence
and k-means of the reference recipe: see ``train/configs/dvml_cars196_reference.cfg``.

Network: backbone -> global average pool -> x (F-d) -> three Dense heads: mu, log sigma^2 and
the intra-class invariance z_I (E-d each), on x itself in paper mode (GeDML: single Linear
layers on the trunk's output, dvml_embedder.yaml MLP [1024, 512]; dvml_collector.py L120-121,
_default_global_collector.py L44-45) and on BatchNorm(x) in reference mode (the seed's
``bn_block``, main.py L81-89). Synthetic samples
z^(t) = z_I + mu + exp(log sigma^2 / 2) * eps_t, t = 1..T; a decoder maps z^(t) back to x.
    J = l1 KL(N(mu, sigma^2) || N(0, I)) + l2 recon(x, dec(z)) + l3 L_m(z^(1)) + l4 L_m(z_I)
with L_m any dmltf loss (``--loss``). ``metric_l2_normalize`` L2-normalises z_I and z^(1) before
L_m (GeDML's metric, euclid.yaml ``is_normalize: true``); the seed feeds them raw. The recipes:
``dvml_cars196_paper.cfg`` GeDML's L_m (link_dvml.yaml: TripletLoss margin 1, dense triplets,
Euclidean distances of normalised embeddings, the mean of the non-zero terms:
``--miner=all --distance=euclidean --reduction=mean_nonzero --dvml_metric_l2_normalize``),
``dvml_cars196_paper_semihard.cfg`` and ``dvml_cars196_reference.cfg`` the seed's (TF-contrib
semi-hard triplet, margin 1, squared distances of raw embeddings; also the Python API's
default). Phase 1 (lambdas 1, 1, 0.1, 1) cuts the decoder's gradient off the encoder; phase 2
(0.8, 1, 0.2, 0.8) releases it.
The phase switches after ``phase1_epochs`` epochs, or ``phase1_steps`` steps when that is > 0.
Evaluation and export use z_I (L2-normalised in the model unless ``l2_normalize=False``).

Modes (``--dvml_mode``):

=============================  ==================================  ===================================
                               ``paper`` (default)                 ``reference`` (Xun-Yang TF port)
=============================  ==================================  ===================================
decoder gradient into encoder  phase 2 only (z_I, mu, sigma)       never (phase only switches the
                                                                   decoder BN inference -> training)
samples T                      20 (``--dvml_num_samples``)             1, reconstruction divided by 20 B
KL                             mean over the batch                 mean over the batch, divided by B
                                                                   again (the double 1/B bug)
reconstruction                 GeDML's MSE: the mean over T, B     1/(20 B) sum ||x - x_hat||^2
                               and the F features (see below)
heads                          Dense on x (GeDML)                  Dense on BatchNorm(x) (``bn_block``)
decoder                        (Dense-BN-ReLU) x 2 (GeDML          Dense-ReLU-BN-Dense (``fc_block``)
                               BatchNormMLP, dvml_decoder.yaml)
weight decay                   the trainer's (``--weight_decay``)  5e-3 sum ||v||^2/2 over non-BN
                                                                   encoder variables, inside l4's term
optimisation                   every group minimises J             encoder: l1 KL + l3 L3 + l4 (L4 +
                                                                   wd); decoder: l2 L2; a softmax
                                                                   classifier on the stopped x: CE
NaN                            -                                   each objective that is NaN, or a
                                                                   batch without a positive pair (the
                                                                   TF-contrib loss divides 0 by 0),
                                                                   is replaced by 0
=============================  ==================================  ===================================

Reference-mode learning rates (encoder Adam 7e-5, decoder 1e-2, classifier 1e-3) come from the
flagfile (``--lr``, ``--group_lrs=decoder:1e-2,classifier:1e-3``), groups being ``backbone``,
``head`` (the heads, and reference mode's feature BN), ``decoder``, ``loss`` (the metric loss's own
weights, if any: proxies, the margin loss's beta; minimising what the encoder minimises) and, in
reference mode, ``classifier``.

Deviations: the reconstruction target x is a stop-gradient constant in both modes (GeDML leaves
it attached, so its reconstruction gradient reaches the backbone through the target even in
phase 1); the samples are reparameterised (GeDML draws them with ``Normal.sample()``, which
carries no gradient to mu and sigma); paper mode draws T samples in phase 1 too (GeDML one);
the Dense layers keep Keras's Glorot-uniform initialisation (GeDML's ``_initiate_linear_layer_``,
mlp.py L11-14: Kaiming-normal fan-out weights, zero biases); with GeDML's L_m a batch whose
triplets are all zero gives 0, GeDML's ``torch.mean`` of no terms NaN (triplet_loss.py L37-38).
On zero-shot digits (``bench/dvml_digits.py``) GeDML's heads on the raw feature cost paper mode
about 0.05 MAP@R against the earlier BatchNorm(x) heads; they are kept as the reference has them.
The paper prints L2 = 1/(T B) sum_i sum_t ||x_i - x_hat_i^(t)||_2, a norm, not squared; both
implementations use squared errors, GeDML as ``F.mse_loss``, which paper mode follows by default.
``--dvml_recon_reduction`` picks the form: ``mean`` (GeDML, default), ``sample_sum``
(1/(T B) sum ||x - x_hat||^2: F times larger, the seed's sum without its 1/20) or ``norm`` (the
formula as printed). Its scale decides how much phase 2's reconstruction gradient outweighs the
metric terms in the encoder; reference mode ignores the flag.
Reference mode: the classifier has ``num_classes`` outputs (the seed 99 for 98 1-based labels).
Noise is drawn for the whole global batch from a stateless generator keyed on (seed, step
counter), and each replica takes its rows: the counter is a checkpointed variable, so a resumed
run draws the same noise, and N replicas draw what one device draws (a Keras SeedGenerator
keeps one state copy per replica, so each replica would draw the same rows for its share
instead of its slice of the global draw).

Example:
    >>> import numpy as np
    >>> from dmltf.methods.dvml import DVML, build_encoder
    >>> encoder, embedding_model = build_encoder("small_cnn", (8, 8, 1), 4)
    >>> dvml = DVML(encoder, embedding_model, num_samples=3)  # over semi-hard triplet, the seed's
    >>> out = dvml.compute_losses((np.random.rand(6, 8, 8, 1).astype("float32"), np.array([0, 0, 0, 1, 1, 1])))
    >>> sorted(k for k in out if not k.startswith("lambda")), int(out["phase"])
    (['invariant', 'kl', 'loss', 'phase', 'recon', 'synthetic'], 1)
"""
import keras
import tensorflow as tf
from keras import ops

from dmltf import losses, methods
from dmltf.distances import l2_normalize
from dmltf.layers import GlobalPooling, L2Normalize
from dmltf.methods.base import Method, OptimizerGroup, gather_global_batch, loss_weights_group
from dmltf.models import backbones, freeze_batchnorm

MODES = ("paper", "reference")
RECON_REDUCTIONS = ("mean", "sample_sum", "norm")  # paper mode, per sample: ||x - x_hat||^2 / F, ||.||^2, ||.||
REFERENCE_RECON_DIVISOR = 20  # the seed's 1/(20 B): T = 20 in the paper, one sample drawn
DEFAULT_SAMPLES = {"paper": 20, "reference": 1}
FEATURE_BN = "feature_bn"  # reference mode's BatchNorm of x before the heads (main.py L81)


def build_encoder(backbone, input_shape, embedding_dim, *, pooling="avg", weights=None, freeze_bn=False,
                  l2_normalize=True, mode="paper"):
    """(encoder: images -> [x, mu, log_var, z_I], embedding_model: images -> z_I), sharing layers.

    ``mode`` as DVML's: ``paper`` puts the three Dense heads on the pooled feature x itself
    (GeDML), ``reference`` on BatchNorm(x) (the seed's ``bn_block``, a layer named ``feature_bn``)."""
    if int(embedding_dim) < 1:
        raise ValueError(f"DVML needs --embedding_dim >= 1 (the size of mu, log sigma^2 and z_I), got {embedding_dim}")
    if mode not in MODES:
        raise ValueError(f"--dvml_mode must be one of {', '.join(MODES)}, got {mode!r}")
    trunk = backbones.build(backbone, input_shape, weights=weights)
    trunk.name = "backbone"
    if freeze_bn:
        freeze_batchnorm(trunk)
    images = keras.Input(input_shape, name="images")
    features = GlobalPooling(pooling, name="pool")(trunk(images))
    head_input = keras.layers.BatchNormalization(name=FEATURE_BN)(features) if mode == "reference" else features
    heads = [keras.layers.Dense(embedding_dim, name=n)(head_input) for n in ("mu", "log_var", "invariance")]
    encoder = keras.Model(images, [features, *heads], name="encoder")
    output = L2Normalize(name="l2_normalize")(heads[2]) if l2_normalize else heads[2]
    return encoder, keras.Model(images, output, name="embedding_model")


@methods.register("dvml")
class DVML(Method):
    """DVML on ``encoder`` (see :func:`build_encoder`) with ``metric_loss`` (see the module docstring).

    ``metric_loss`` defaults to the seed's: TF-contrib semi-hard triplet, margin 1, squared Euclidean.
    ``num_classes`` sizes reference mode's monitoring classifier.
    """

    flag_help = {
        "mode": "paper (GeDML's reading: reconstruction reaches the encoder in phase 2) or reference (the "
                "Xun-Yang TF port's behaviour and quirks; see dmltf/methods/dvml.py).",
        "num_samples": "T, reparameterised samples per image; 0: the mode's (paper 20, reference 1).",
        "lambdas_phase1": "lambda1..4 (KL, reconstruction, synthetic, invariant) in phase 1.",
        "lambdas_phase2": "lambda1..4 in phase 2.",
        "phase1_epochs": "Phase 1 lasts this many epochs (when --dvml_phase1_steps is 0).",
        "phase1_steps": "If > 0, phase 1 lasts this many training steps instead.",
        "decoder_units": "Hidden width of the decoder (embedding -> hidden -> backbone feature).",
        "recon_reduction": "Paper-mode reconstruction: mean = GeDML's MSE (mean over samples, batch and "
                           "features), sample_sum = 1/(T B) sum ||x - x_hat||^2, norm = 1/(T B) sum ||x - x_hat|| "
                           "(the paper's printed formula).",
        "metric_l2_normalize": "L2-normalise z_I and the synthetic z before the metric loss (GeDML's metric: "
                               "euclid.yaml is_normalize); false: raw, as the seed.",
        "weight_decay": "reference mode: 5e-3 * sum ||v||^2 / 2 over the encoder's non-BN variables, inside the "
                        "invariant term.",
    }

    @classmethod
    def from_parts(cls, parts, **hyperparameters):
        if parts.sync_batchnorm and hyperparameters.get("mode") == "reference":
            raise ValueError("--sync_batchnorm is not supported with --dvml_mode=reference: its decoder BatchNorm "
                             "switches between batch and moving statistics by phase inside the graph (tf.cond), "
                             "where a cross-replica reduction cannot run")
        encoder, embedding_model = build_encoder(
            parts.backbone, parts.input_shape, parts.embedding_dim, pooling=parts.pooling,
            weights=parts.backbone_weights, freeze_bn=parts.freeze_bn, l2_normalize=parts.l2_normalize,
            mode=hyperparameters.get("mode", "paper"))
        return cls(encoder, embedding_model, parts.loss(), parts.num_classes, seed=parts.seed, **hyperparameters)

    def __init__(self, encoder, embedding_model, metric_loss=None, num_classes=None, *, mode="paper", num_samples=0,
                 lambdas_phase1=(1.0, 1.0, 0.1, 1.0), lambdas_phase2=(0.8, 1.0, 0.2, 0.8), phase1_epochs=1,
                 phase1_steps=0, decoder_units=512, recon_reduction="mean", weight_decay=5e-3,
                 metric_l2_normalize=False, seed=0, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"--dvml_mode must be one of {', '.join(MODES)}, got {mode!r}")
        if recon_reduction not in RECON_REDUCTIONS:
            raise ValueError(f"--dvml_recon_reduction must be one of {', '.join(RECON_REDUCTIONS)}, got {recon_reduction!r}")
        for name, lambdas in (("phase1", lambdas_phase1), ("phase2", lambdas_phase2)):
            if len(lambdas) != 4:
                raise ValueError(f"--dvml_lambdas_{name} needs 4 values (KL, recon, synthetic, invariant), got {lambdas}")
        if mode == "reference" and not num_classes:
            raise ValueError("--dvml_mode=reference needs num_classes (its monitoring softmax classifier)")
        has_feature_bn = any(layer.name == FEATURE_BN for layer in encoder.layers)
        if has_feature_bn != (mode == "reference"):
            raise ValueError(f"--dvml_mode={mode} needs an encoder {'with' if mode == 'reference' else 'without'} "
                             f"the '{FEATURE_BN}' BatchNorm before the heads: build_encoder(..., mode={mode!r})")
        if metric_loss is None:
            metric_loss = losses.get("triplet", margin=1.0, miner="semi_hard", distance="squared_euclidean")
        self.metric_l2_normalize = bool(metric_l2_normalize)
        self.mode, self.recon_reduction, self.seed = mode, recon_reduction, int(seed)
        self.num_samples = int(num_samples) or DEFAULT_SAMPLES[mode]
        if mode == "reference" and self.num_samples != 1:
            raise ValueError("--dvml_mode=reference draws one sample (its 1/20 factor stands for T); use --dvml_num_samples=0")
        self.lambdas = ops.convert_to_tensor([list(map(float, lambdas_phase1)), list(map(float, lambdas_phase2))])
        self.phase1_epochs, self.phase1_steps = int(phase1_epochs), int(phase1_steps)
        self.weight_decay = float(weight_decay)
        self.encoder, self.embedding_model, self.metric_loss = encoder, embedding_model, metric_loss
        self.embedding_dim = encoder.output[1].shape[-1]
        feature_dim = encoder.output[0].shape[-1]
        self.decoder_hidden = keras.layers.Dense(decoder_units, name="decoder_hidden")
        self.decoder_bn = keras.layers.BatchNormalization(name="decoder_bn")
        self.decoder_out = keras.layers.Dense(feature_dim, name="decoder_out")
        # GeDML's second BatchNormLayer ends in BN -> ReLU too (dvml_decoder.yaml); the seed's ends in the Dense.
        self.decoder_out_bn = keras.layers.BatchNormalization(name="decoder_out_bn") if mode == "paper" else None
        for layer, dim in ((self.decoder_hidden, self.embedding_dim), (self.decoder_bn, decoder_units),
                           (self.decoder_out, decoder_units), (self.decoder_out_bn, feature_dim)):
            if layer is not None:
                layer.build((None, dim))
        self.classifier = None
        if mode == "reference":
            self.classifier = keras.layers.Dense(num_classes, name="classifier")
            self.classifier.build((None, feature_dim))
        state = lambda name: self.add_weight(name=name, shape=(), dtype="int64", initializer="zeros",
                                             trainable=False, aggregation="only_first_replica")
        self.epoch_seen, self.train_steps, self.phase = state("epoch_seen"), state("train_steps"), state("phase")

    # -- phase ----------------------------------------------------------------------------
    def on_epoch_begin(self, epoch):
        self.epoch_seen.assign(epoch)

    def current_phase(self):
        """1 or 2 (int64) from the epoch (or the step counter, if ``phase1_steps`` > 0)."""
        in_phase1 = self.train_steps < self.phase1_steps if self.phase1_steps > 0 else self.epoch_seen < self.phase1_epochs
        return ops.where(in_phase1, ops.cast(1, "int64"), ops.cast(2, "int64"))

    # -- network pieces -------------------------------------------------------------------
    def decoder_layers(self):
        """The decoder's layers in order (ReLUs are ops between them, see :meth:`decode`)."""
        return [layer for layer in (self.decoder_hidden, self.decoder_bn, self.decoder_out, self.decoder_out_bn)
                if layer is not None]

    def decode(self, z, phase, training):
        h = self.decoder_hidden(z)
        if self.mode == "paper":  # GeDML BatchNormMLP [E, U, F]: (Linear -> BN -> ReLU) twice
            h = ops.relu(self.decoder_bn(h, training=training))
            return ops.relu(self.decoder_out_bn(self.decoder_out(h), training=training))
        # nn_Ops.fc_block: matmul -> ReLU -> BN, BN training only in phase 2 (is_Phase); then a plain matmul
        h = ops.relu(h)
        if training:
            h = tf.cond(phase == 2, lambda: self.decoder_bn(h, training=True),
                        lambda: self.decoder_bn(h, training=False))
        else:
            h = self.decoder_bn(h, training=False)
        return self.decoder_out(h)

    def _noise(self, local_batch, step):
        """[T, local_batch, E] standard normal: this replica's rows of the global batch's draw."""
        ctx = tf.distribute.get_replica_context()
        replicas, replica = (ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group) if ctx else (1, 0)
        seed = ops.stack([ops.cast(self.seed, "int64"), ops.cast(step, "int64")])
        # TF op: keras.random takes no tensor seed, and the counter is a tensor in the step.
        eps = tf.random.stateless_normal((self.num_samples, local_batch * replicas, self.embedding_dim), seed)
        return eps[:, replica * local_batch:(replica + 1) * local_batch]

    def _recon_per_sample(self, squared_error):
        """Paper mode's per-sample reconstruction term from ||x - x_hat||^2 (see ``RECON_REDUCTIONS``)."""
        if self.recon_reduction == "mean":
            return squared_error / ops.cast(self.decoder_out.units, squared_error.dtype)
        if self.recon_reduction == "norm":  # clamped: the gradient of the norm is undefined at 0
            return ops.sqrt(ops.maximum(squared_error, 1e-12))
        return squared_error

    def _decayed_variables(self):
        bn = {id(v) for layer in self.encoder._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
              for v in layer.trainable_variables}
        return [v for v in self.encoder.trainable_variables if id(v) not in bn]

    # -- the Method contract --------------------------------------------------------------
    def compute_losses(self, batch, training=True):
        images, labels = batch
        # The sampling, the decoder's error and the KL term in float32 under mixed precision (exp overflows half).
        x, mu, log_var, z_inv = (ops.cast(t, "float32") for t in self.encoder(images, training=training))
        phase, local = self.current_phase(), ops.shape(z_inv)[0]
        z_syn = z_inv[None] + mu[None] + ops.exp(0.5 * log_var)[None] * self._noise(local, self.train_steps)  # [T, b, E]
        if training:  # after the noise read the counter (stateful ops keep program order)
            self.phase.assign(phase)
            self.train_steps.assign_add(1)
        stopped = ops.stop_gradient(z_syn)
        decoder_input = stopped if self.mode == "reference" else ops.where(phase == 1, stopped, z_syn)
        x_hat = ops.cast(self.decode(ops.reshape(decoder_input, (-1, self.embedding_dim)), phase, training), "float32")
        squared_error = ops.sum(ops.square(ops.reshape(x_hat, (self.num_samples, local, -1)) - ops.stop_gradient(x)[None]), -1)

        # Per-sample terms travel with the embeddings in the one cross-replica gather, so every
        # value below is the global batch's.
        kl_terms = -0.5 * ops.sum(1.0 + log_var - ops.square(mu) - ops.exp(log_var), -1)
        recon_terms = ops.sum(squared_error if self.mode == "reference" else self._recon_per_sample(squared_error), 0)
        columns = [z_inv, z_syn[0], kl_terms[:, None], recon_terms[:, None]]
        if self.mode == "reference":
            logits = ops.cast(self.classifier(ops.stop_gradient(x)), "float32")
            columns.append(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)[:, None])
        labels_all, gathered = gather_global_batch(labels, ops.concatenate([ops.cast(c, "float32") for c in columns], 1))
        e = self.embedding_dim
        batch_size = ops.cast(ops.shape(labels_all)[0], "float32")
        kl = ops.mean(gathered[:, 2 * e])
        if self.mode == "reference":
            kl = kl / batch_size
            recon = ops.sum(gathered[:, 2 * e + 1]) / (REFERENCE_RECON_DIVISOR * batch_size)
        else:
            recon = ops.sum(gathered[:, 2 * e + 1]) / (self.num_samples * batch_size)
        z_inv_all, z_syn_all = gathered[:, :e], gathered[:, e:2 * e]
        if self.metric_l2_normalize:  # GeDML's metric (euclid.yaml: is_normalize) normalises its inputs
            z_inv_all, z_syn_all = l2_normalize(z_inv_all), l2_normalize(z_syn_all)
        invariant = self.metric_loss(labels_all, z_inv_all)
        synthetic = self.metric_loss(labels_all, z_syn_all)
        lam = ops.take(self.lambdas, phase - 1, axis=0)
        out = {"kl": kl, "recon": recon, "synthetic": synthetic, "invariant": invariant,
               **{f"lambda{i + 1}": lam[i] for i in range(4)}, "phase": ops.cast(phase, "float32")}
        if self.mode == "paper":
            out["loss"] = lam[0] * kl + lam[1] * recon + lam[2] * synthetic + lam[3] * invariant
            return out
        xent = ops.mean(gathered[:, 2 * e + 2])
        return {**out, **self._reference_objectives(lam, labels_all, kl, recon, synthetic, invariant, xent)}

    def _reference_objectives(self, lam, labels_all, kl, recon, synthetic, invariant, xent):
        """The seed's three optimiser objectives (nn_Ops.training zeroes a NaN loss)."""
        wd = self.weight_decay * ops.sum(ops.stack([0.5 * ops.sum(ops.square(v)) for v in self._decayed_variables()]))
        same = ops.cast(ops.equal(labels_all[:, None], labels_all[None, :]), "float32")
        # TF-contrib's mean over positive pairs is 0/0 without a pair beyond the diagonal.
        has_pair = ops.sum(same) > ops.cast(ops.shape(labels_all)[0], "float32")
        encoder = lam[0] * kl + lam[2] * synthetic + lam[3] * (invariant + wd)
        encoder = ops.where(ops.logical_and(has_pair, ops.isfinite(encoder)), encoder, 0.0)
        zero_nan = lambda v: ops.where(ops.isfinite(v), v, 0.0)
        decoder, xent = zero_nan(lam[1] * recon), zero_nan(xent)
        return {"weight_decay": wd, "encoder_loss": encoder, "decoder_loss": decoder, "classifier_loss": xent,
                "loss": encoder + decoder + xent}

    def optimizer_groups(self):
        backbone = self.encoder.get_layer("backbone").trainable_variables
        backbone_ids = {id(v) for v in backbone}
        head = [v for v in self.encoder.trainable_variables if id(v) not in backbone_ids]
        decoder = [v for layer in self.decoder_layers() for v in layer.trainable_variables]
        reference = self.mode == "reference"
        wd = 0.0 if reference else None  # reference: plain Adam, the decay is inside the loss
        groups = [OptimizerGroup("backbone", backbone, "encoder_loss" if reference else "loss", weight_decay=wd),
                  OptimizerGroup("head", head, "encoder_loss" if reference else "loss", weight_decay=wd),
                  OptimizerGroup("decoder", decoder, "decoder_loss" if reference else "loss", weight_decay=wd),
                  loss_weights_group(self.metric_loss, "encoder_loss" if reference else "loss", weight_decay=wd)]
        if reference:
            groups.append(OptimizerGroup("classifier", self.classifier.trainable_variables, "classifier_loss",
                                         weight_decay=wd))
        return [g for g in groups if g.variables]

    def loss_layers(self):
        return [self.metric_loss]
