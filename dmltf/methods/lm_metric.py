"""LM-Metric: learned pair weighting and contextual memory for deep metric learning (Shiyang Yan).

Reference: the official code ``Shiyang-Yan/LM-metric`` (``architectures/resnet50.py``,
``main.py``, ``criteria/smoothap.py``, ``models/glow``, ``datasampler/hierarchical_sampler.py``)
on Revisiting-DML; METHODS.md section 2 (2.2 network, 2.3 losses and training, 2.5 the
paper-level reading; the paper itself could not be read).

With f the trunk feature (F: ResNet-50's 2048, average + max pooling summed, BatchNorm frozen)
and ``mapping`` one Linear F -> E (E = 512):
    e1 = mapping(f)                                     the direct embedding
    (h_fwd, h_bwd) = BiGRU(f_1 ... f_B)                 the batch as one sequence, loader order,
                                                        hidden F (the mapping is shared)
    r = sigmoid(mapping((h_fwd + h_bwd) / 2))           the batch context
    pi = softmax(policy(h_fwd)),  a ~ pi,  w = (a + 1) / 64   a weight per item (no gradient)
    emb = normalize(e1 + r),  emb2 = normalize(e1 + s),  s = flow sample given e1
    L = SmoothAP_w(emb) + SmoothAP_w(emb2) + NLL_flow(sg(r) | sg(e1)) [+ L_RL in paper mode]
SmoothAP_w is the main ``--loss`` (``smooth_ap``, tau 0.01) with ``rank_weights=w``: the weight
scales item i's all-items rank, rank_all(q, i) = 1 + w_i sum_{j != i} sg(S_qj - S_qi). The flow is
:class:`dmltf.models.glow.ConditionalGlow` on r and e1 viewed as [E / width, width, 1] images
(the reference's 1 x 16 x 32), 2 levels x 8 steps, 128 channels; s is a draw at temperature 0.6.

Modes (``--lm_metric_mode``):
- ``paper`` (default): the policy is trained by REINFORCE, L_RL = -mean_q (R_q - b) log pi(a_q),
  with R_q the average precision of query q in the batch (on sg(emb), inner product, the query
  excluded from its gallery) and b an exponential moving average of the batch's mean reward
  (b <- (1 - alpha) b + alpha mean_q R_q after its use, alpha 0.05 as PADS' REINFORCE, b = 0 at
  the start); the policy head gets gradient from L_RL only.
- ``reference``: the released code's run: L_RL is computed and logged (no baseline, the query in
  its own reward gallery, as its all-camid-1-vs-0 re-ID evaluation does) but not optimised
  (``loss_all = loss + gan_loss #+ rl_loss``), so the weights are draws from the untrained softmax;
  the policy head is in no optimizer group (PyTorch's Adam skips parameters without a gradient,
  weight decay included). Its input normalisation's std typo (0.228) is the preprocessing
  ``torch_imagenet_lm`` (``lm_metric_sop_reference.cfg``).

Evaluation and export use normalize(e1 + s) with s the flow's sample at the temperature given
e1, drawn from a stateless generator seeded by (seed, a fingerprint of the input image's
values): one fixed draw per image, the same whatever the batch or the device, so the exported
model computes exactly what evaluation computed; ``--lm_metric_deterministic`` uses z = 0.
Training draws (actions, dequantisation noise, the emb2 sample) come from a stateless generator
keyed on (seed, step), for the whole global batch: a resumed run and N replicas draw what one
uninterrupted device draws.

Under a multi-replica strategy the trunk features are gathered first and the rest runs on the
global batch on every replica: the GRU's sequence is the global batch in loader order, as on
one device.

Optimizer groups: ``backbone``, ``head`` (pooling, mapping, GRU), ``flow`` (the Glow), ``policy``
(paper mode). The reference's warm-up (5 epochs, backbone frozen) is ``--warmup_epochs=5
--warmup_groups=head,flow,policy``; its Adam(lr 1e-4, weight_decay 1e-4) is ``--optimizer=adam
--weight_decay_mode=l2``, its StepLR(20, 0.5) ``--schedule=step --lr_step_size=20 --lr_gamma=0.5``.

Deviations: the reference's unused parameters (the ``decision_fcsn`` head, ``transform``) are
left out: they get no gradient, so they never change. Its ``n_classes = 11316`` for NMI and its
broken ``mAP_r`` are not reproduced (dmltf's k is the number of test classes).
PyTorch's initialisation is kept for the mapping, the policy and the GRU
(U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the GRU's gates are Keras' ``reset_after`` form, PyTorch's).

On zero-shot digits (``bench/lm_metric_digits.py``, 5 seeds, same network) both modes trail
Smooth-AP alone (map@r -0.060 +- 0.018 paper, -0.065 +- 0.023 reference); the paper mode's policy
does move (entropy 4.16 -> 3.28) while its batch-AP reward saturates at 1.

Example:
    >>> import numpy as np
    >>> from dmltf import losses
    >>> from dmltf.methods.lm_metric import LMMetric, build_lm_metric_models
    >>> from dmltf.models import build_embedding_model
    >>> trunk = build_embedding_model("small_cnn", (8, 8, 1), embedding_dim=0, l2_normalize=False)
    >>> parts = build_lm_metric_models(trunk, embedding_dim=8, flow_width=4, flow_channels=4, flow_levels=1,
    ...                                flow_steps=1)
    >>> lm = LMMetric(*parts, losses.get("smooth_ap"))
    >>> out = lm.compute_losses((np.random.rand(6, 8, 8, 1).astype("float32"), np.array([0, 0, 0, 1, 1, 1])))
    >>> sorted(k for k in out if k.startswith("smooth_ap"))
    ['smooth_ap', 'smooth_ap_flow']
"""
import math

import keras
import tensorflow as tf
from keras import ops

from dmltf import methods, registry
from dmltf.data.augmentation import image_fingerprints
from dmltf.distances import l2_normalize
from dmltf.layers import L2Normalize
from dmltf.methods.base import Method, OptimizerGroup, gather_global_batch, loss_weights_group
from dmltf.models.glow import ConditionalGlow

MODES = ("paper", "reference")
NUM_ACTIONS = 64  # the reference's aspace = (1 .. 2 beta) / (2 beta), beta = 32
# Streams of the training generator, keyed on (seed, step, stream).
_ACTIONS, _DEQUANTIZE, _SAMPLE = 0, 1, 2


def _torch_uniform(fan_in):
    """PyTorch's default Linear / GRU initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def torch_linear(units, fan_in, name):
    init = _torch_uniform(fan_in)
    return keras.layers.Dense(units, kernel_initializer=init, bias_initializer=init, name=name)


@keras.saving.register_keras_serializable(package="dmltf")
class BatchContext(keras.layers.Layer):
    """The reference's ``smachine``: a bidirectional GRU over the batch as one sequence (GRU batch
    1, h0 = 0). [B, F] -> (forward states [B, F], backward states [B, F])."""

    def build(self, input_shape):
        units = int(input_shape[-1])
        init = _torch_uniform(units)
        gru = keras.layers.GRU(units, return_sequences=True, reset_after=True, kernel_initializer=init,
                               recurrent_initializer=init, bias_initializer=init)
        self.gru = keras.layers.Bidirectional(gru, merge_mode=None, name="bigru")
        self.gru.build((1, None, units))

    def call(self, features):
        forward, backward = self.gru(features[None])  # the backward states come back in input order
        return forward[0], backward[0]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape), tuple(input_shape)


def image_seeds(images, seed):
    """[B, 2] int64 stateless seeds: (seed, the fingerprint of each image's float32 values)."""
    fingerprint = image_fingerprints(tf.cast(images, tf.float32))
    return tf.stack([tf.fill(tf.shape(fingerprint), tf.constant(seed, tf.int64)), fingerprint], axis=1)


@keras.saving.register_keras_serializable(package="dmltf")
class FlowContext(keras.layers.Layer):
    """The evaluation-time context: the flow's sample given e1, one fixed draw per image.

    Called on (e1 [B, E], images): z ~ N(0, temperature^2) from the image's seed
    (:func:`image_seeds`), or z = 0 when ``deterministic``; returns the sample as [B, E]."""

    def __init__(self, flow, temperature=0.6, seed=0, deterministic=False, **kwargs):
        # float32 as the flow: a half-precision caller's autocast would reach the flow's weights.
        super().__init__(**{**kwargs, "dtype": "float32"})
        self.flow = flow if isinstance(flow, ConditionalGlow) else keras.saving.deserialize_keras_object(flow)
        self.temperature, self.seed, self.deterministic = float(temperature), int(seed), bool(deterministic)

    def build(self, e1_shape, images_shape=None):
        if not self.flow.built:
            self.flow.build((None, *self.flow.image_shape))

    def call(self, e1, images):
        shape = self.flow.image_shape
        cond = ops.reshape(e1, (-1, *shape))
        if self.deterministic:
            z = ops.zeros_like(cond)
        else:
            z = tf.map_fn(lambda s: tf.random.stateless_normal(shape, s), image_seeds(images, self.seed),
                          fn_output_signature=tf.TensorSpec(shape, tf.float32))
        sample = self.flow.inverse(self.temperature * z, cond, training=False)
        return ops.reshape(sample, ops.shape(e1))

    def compute_output_shape(self, e1_shape, images_shape=None):
        return tuple(e1_shape)

    def get_config(self):
        return {**super().get_config(), "flow": keras.saving.serialize_keras_object(self.flow),
                "temperature": self.temperature, "seed": self.seed, "deterministic": self.deterministic}


def build_lm_metric_models(feature_model, *, embedding_dim=512, flow_width=32, flow_channels=128, flow_levels=2,
                           flow_steps=8, temperature=0.6, seed=0, deterministic=False):
    """(feature_model, mapping, context, policy, flow, embedding_model: images -> normalize(e1 + s))."""
    features = int(feature_model.output_shape[-1])
    if embedding_dim % flow_width:
        raise ValueError(f"LM-Metric's flow views the {embedding_dim}-d embedding (--embedding_dim) as an image of "
                         f"width --lm_metric_flow_width={flow_width}: {embedding_dim} is not a multiple of it")
    mapping = torch_linear(embedding_dim, features, "mapping")
    mapping.build((None, features))
    context = BatchContext(name="batch_context")
    context.build((None, features))
    policy = torch_linear(NUM_ACTIONS, features, "policy")
    policy.build((None, features))
    flow = ConditionalGlow(num_channels=flow_channels, num_levels=flow_levels, num_steps=flow_steps,
                           image_shape=(embedding_dim // flow_width, flow_width, 1), name="flow")
    flow.build((None, embedding_dim // flow_width, flow_width, 1))
    images = keras.Input(feature_model.input_shape[1:], name="images")
    e1 = mapping(feature_model(images))
    sample = FlowContext(flow, temperature, seed, deterministic, name="flow_context")(e1, images)
    output = L2Normalize(name="l2_normalize")(keras.layers.Add(name="e1_plus_context")([e1, sample]))
    embedding_model = keras.Model(images, output, name="embedding_model")
    return feature_model, mapping, context, policy, flow, embedding_model


def batch_average_precision(embeddings, labels, include_self):
    """Each query's average precision over the batch ranked by inner product (descending; ties
    in index order): the reward. ``include_self`` ranks the query in its own gallery (the
    reference). Returns (AP [B], has_positive [B])."""
    n = ops.shape(labels)[0]
    sim = ops.matmul(embeddings, ops.transpose(embeddings))
    own = ops.cast(ops.eye(n), "bool")
    if not include_self:
        sim = ops.where(own, -1e30, sim)
    order = tf.argsort(sim, axis=1, direction="DESCENDING", stable=True)
    relevant = ops.equal(ops.take(labels, order), labels[:, None])
    if not include_self:
        relevant = ops.logical_and(relevant, ops.not_equal(order, ops.arange(n, dtype=order.dtype)[:, None]))
    relevant = ops.cast(relevant, "float32")
    hits = ops.cumsum(relevant, axis=1)
    precision = hits / ops.cast(ops.arange(1, n + 1), "float32")[None]
    count = ops.sum(relevant, axis=1)
    return ops.sum(precision * relevant, axis=1) / ops.maximum(count, 1.0), count > 0


@methods.register("lm_metric")
class LMMetric(Method):
    """LM-Metric on a trunk feature model (see the module docstring and :func:`build_lm_metric_models`)."""

    default_sampler = "hierarchical"
    flag_help = {
        "mode": "paper (the policy learns by REINFORCE with an EMA baseline) or reference (the released code: the "
                "RL term logged, not optimised; the query in its own reward gallery).",
        "baseline_alpha": "paper mode: the reward baseline's EMA rate, b <- (1 - alpha) b + alpha mean(R).",
        "temperature": "Temperature of the flow's samples (training's second branch and evaluation).",
        "deterministic": "Evaluate and export with the flow's z = 0 instead of one seeded draw per image.",
        "flow_width": "Width of the image the flow sees the embedding as: [E / width, width, 1] (the "
                      "reference's 16 x 32 for E = 512).",
        "flow_channels": "Hidden channels of the flow's coupling networks.",
        "flow_levels": "Levels of the flow (squeeze, steps, split).",
        "flow_steps": "Flow steps per level (ActNorm, invertible 1x1 conv, affine coupling).",
        "nll_weight": "Weight of the flow's negative log-likelihood in the loss (the reference's 1).",
    }

    @classmethod
    def from_parts(cls, parts, **hyperparameters):
        settings = {**registry.hyperparameters(cls), **hyperparameters, "seed": parts.seed}
        if settings["mode"] not in MODES:
            raise ValueError(f"--lm_metric_mode must be one of {', '.join(MODES)}, got {settings['mode']!r}")
        models = build_lm_metric_models(
            parts.feature_model(), embedding_dim=parts.embedding_dim, flow_width=int(settings["flow_width"]),
            flow_channels=int(settings["flow_channels"]), flow_levels=int(settings["flow_levels"]),
            flow_steps=int(settings["flow_steps"]), temperature=settings["temperature"], seed=parts.seed,
            deterministic=settings["deterministic"])
        return cls(*models, parts.loss(), **settings)

    def __init__(self, feature_model, mapping, context, policy, flow, embedding_model, ap_loss, *, mode="paper",
                 baseline_alpha=0.05, temperature=0.6, deterministic=False, flow_width=32, flow_channels=128,
                 flow_levels=2, flow_steps=8, nll_weight=1.0, seed=0, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"--lm_metric_mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not getattr(ap_loss, "takes_rank_weights", False):
            raise ValueError(f"LM-Metric weighs each item's rank: its --loss must take rank_weights (smooth_ap), "
                             f"not {type(ap_loss).__name__}")
        self.feature_model, self.mapping, self.context, self.policy = feature_model, mapping, context, policy
        self.flow, self.embedding_model, self.ap_loss = flow, embedding_model, ap_loss
        self.mode, self.baseline_alpha, self.temperature = mode, float(baseline_alpha), float(temperature)
        self.nll_weight, self.seed = float(nll_weight), int(seed)
        self.train_steps = self.add_weight(name="train_steps", shape=(), dtype="int64", initializer="zeros",
                                           trainable=False, aggregation="only_first_replica")
        self.baseline = self.add_weight(name="reward_baseline", shape=(), initializer="zeros", trainable=False,
                                        aggregation="only_first_replica")

    def _seed(self, stream):
        return ops.stack([ops.cast(self.seed, "int64"), self.train_steps * 3 + stream])

    def forward(self, images, labels, training=True):
        """The global batch's tensors of one training step: a dict with ``labels``, ``features``,
        ``e1``, ``forward_states``, ``context`` (r), ``logits`` (policy), ``actions``, ``weights``."""
        labels, features = gather_global_batch(labels, self.feature_model(images, training=training))
        forward_states, backward_states = self.context(features)
        # What the flow, the losses and the policy's softmax read is float32 under mixed precision.
        e1 = ops.cast(self.mapping(features), "float32")
        context = ops.cast(ops.sigmoid(self.mapping((forward_states + backward_states) / 2.0)), "float32")
        logits = ops.cast(self.policy(forward_states), "float32")
        actions = tf.random.stateless_categorical(logits, 1, self._seed(_ACTIONS), dtype=tf.int32)[:, 0]
        weights = ops.cast(actions + 1, "float32") / NUM_ACTIONS
        return {"labels": labels, "features": features, "e1": e1, "forward_states": forward_states,
                "context": context, "logits": logits, "actions": actions, "weights": weights}

    def compute_losses(self, batch, training=True):
        images, labels = batch
        t = self.forward(images, labels, training)
        labels, e1, context, weights = t["labels"], t["e1"], t["context"], t["weights"]
        shape = (-1, *self.flow.image_shape)
        cond = ops.reshape(e1, shape)
        nll = self.flow.nll(ops.stop_gradient(ops.reshape(context, shape)), ops.stop_gradient(cond), training=training,
                            noise=tf.random.stateless_uniform(ops.shape(cond), self._seed(_DEQUANTIZE)))
        z = self.temperature * tf.random.stateless_normal(ops.shape(cond), self._seed(_SAMPLE))
        sample = ops.reshape(self.flow.inverse(z, cond, training=training), ops.shape(e1))
        emb, emb2 = l2_normalize(e1 + context), l2_normalize(e1 + sample)
        out = {"smooth_ap": self.ap_loss(labels, emb, rank_weights=weights),
               "smooth_ap_flow": self.ap_loss(labels, emb2, rank_weights=weights),
               "flow_nll": ops.mean(nll)}
        out.update(self._policy_terms(t, emb))
        out["loss"] = out["smooth_ap"] + out["smooth_ap_flow"] + self.nll_weight * out["flow_nll"]
        if self.mode == "paper":
            out["loss"] = out["loss"] + out["rl"]
        if training:  # after every draw of the step read the counter (stateful ops keep program order)
            self.train_steps.assign_add(1)
        return out

    def _policy_terms(self, t, emb):
        """The REINFORCE term, its reward and baseline, the policy's entropy and the weights drawn."""
        log_pi = ops.log_softmax(t["logits"], axis=-1)
        log_pi_actions = ops.take_along_axis(log_pi, ops.cast(t["actions"], "int32")[:, None], axis=1)[:, 0]
        reward, has_positive = batch_average_precision(ops.stop_gradient(emb), t["labels"],
                                                       include_self=self.mode == "reference")
        counted = ops.cast(has_positive, "float32")
        mean_reward = ops.sum(reward * counted) / ops.maximum(ops.sum(counted), 1.0)
        baseline = tf.identity(self.baseline) if self.mode == "paper" else 0.0  # read before the update
        advantage = ops.stop_gradient(reward - baseline)
        rl = -ops.sum(advantage * log_pi_actions * counted) / ops.maximum(ops.sum(counted), 1.0)
        entropy = -ops.mean(ops.sum(ops.exp(log_pi) * log_pi, axis=-1))
        out = {"rl": rl, "reward": mean_reward, "policy_entropy": entropy, "weights": t["weights"]}
        if self.mode == "paper":  # read above, then updated (stateful ops keep program order)
            out["reward_baseline"] = baseline
            self.baseline.assign((1.0 - self.baseline_alpha) * self.baseline + self.baseline_alpha * mean_reward)
        return out

    def optimizer_groups(self):
        backbone = self.feature_model.get_layer("backbone").trainable_variables
        backbone_ids = {id(v) for v in backbone}
        pooling = [v for v in self.feature_model.trainable_variables if id(v) not in backbone_ids]
        groups = [OptimizerGroup("backbone", backbone),
                  OptimizerGroup("head", pooling + self.mapping.trainable_variables + self.context.trainable_variables),
                  OptimizerGroup("flow", self.flow.trainable_variables),
                  loss_weights_group(self.ap_loss)]
        if self.mode == "paper":
            groups.append(OptimizerGroup("policy", self.policy.trainable_variables))
        return [g for g in groups if g.variables]

    def loss_layers(self):
        return [self.ap_loss]
