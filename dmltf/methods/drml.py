"""DRML: Deep Relational Metric Learning (Zheng, Zhang, Lu, Zhou, ICCV 2021).

Reference: the official code ``zbr17/DRML`` (``src/drml/models/relation_embedder.py``,
``multi_embedder.py``, ``collectors/multi_proxy_collector.py``, ``proxy_collector.py``, the
``proxy_anchor_drml`` link and ``examples/config/args.csv``) on ``zbr17/GeDML`` 2.0.1 (its
``ProxyAnchorLoss``, ``BaseTrainer``, ``BaseManager``); METHODS.md section 3.

The trunk feature h (F = 1024: BN-Inception, average + max pooling summed, BatchNorm frozen) is
split into N chunks h^n of F/N. With sg the stop-gradient and d = E/N:
    v^n = normalize(W_node^n h^n + b)                      nodes, d-dimensional
    a^n = W_A^n sg(h^n),  b^n = W_B^n sg(h^n)                edge features
    e^n = mean_dims (W_dec^n sg(v^n) + c - sg(h^n))^2       each sample's reconstruction error
    s_ij = ReLU(w^T (a^i - b^j) + c),  s_ij / sum_i s_ij    scores, L1-normalised over i
    u^j = sum_i s_ij v^i,  o^j = W_int [v^j; u^j] + c       messages; W_int starts as [I, 0]
    z = [o^1 ... o^N]                                        the embedding (E), L2-normalised to evaluate
Each sample is assigned to the branch of smallest e^n, and
    L = sum_n PA_n(v^n of the samples assigned to n) + w_repre PA(z) + w_recon mean_{samples, n} e^n
with PA_n the ``branch`` loss role (``--drml_branch_loss``, ProxyAnchor with d-dimensional proxies,
kaiming_normal(a = sqrt 5) as MultiProxyCollector) and PA the main ``--loss`` (ProxyAnchor with
E-dimensional proxies; ProxyCollector's kaiming_uniform(a = sqrt 5) is
``--proxy_initializer=kaiming_uniform``, which the flagfiles set). The stop-gradients make the
reconstruction train only the decoders and keep the edges' gradient out of the trunk. The branch
assignment is a sample weight of 1 or 0 on the branch losses: for ProxyAnchor this is exactly the
loss of the assigned subset (a branch with no sample gets 0, as GeDML's).

``--drml_embedder=multi`` is the reference's ``MultiEmbedder`` ablation: no edges and no
relational module, z = [v^1 ... v^N] with the nodes not normalised, and each decoder
reconstructs the whole feature. The reference hard-codes its reconstruction weight 0.1: set
``--drml_recon_weight=0.1`` for it (the flag's default is the relational embedder's 1).

Initialisation as the reference: node, edge, decoder and score weights kaiming_normal(fan_out),
biases 0; the integrator [I, 0] with zero bias.

Optimizer groups: ``backbone`` (the trunk), ``embedder`` (nodes, edges, scores, integrator, and a
GeM pooling exponent if any), ``decoder``, ``ensemble`` (the branch proxies) and ``repre`` (the
proxies of z); GeDML has one AdamW each for trunk, embedder (decoders included), ensemble and
repre, all minimising L. Its warm-up epoch trains embedder, ensemble and repre:
``--warmup_epochs=1 --warmup_groups=embedder,decoder,ensemble,repre``, and it steps no scheduler
during the warm-up: ``--lr_schedule_after_warmup``.

GeDML quirks, off by default, reproduced by flags of the trainer (the ``*_seed.cfg`` flagfiles set
them, as the seed's runs had them):
- gradient-norm clipping at 10 acts only at the first iteration (its clipper holds a parameter
  generator that the first call exhausts): ``--clip_grad_norm=10 --clip_grad_steps=1``. GeDML
  clips the embedder and decoders together; here they are two groups, clipped apart.
- early stop when the *test* Recall@1 has not improved for 10 (old layout) / 15 evaluations:
  ``--early_stop_patience=10 --best_metric=recall@1`` with the test split as ``--eval_split``.
  GeDML also stops when Recall@1 falls to 0.6 x its best ("setting collapsed"): not reproduced.

Deviations: torch's ``normalize`` divides by max(norm, 1e-12), dmltf's by max(norm, 1e-6) (the
same except for all-but-zero vectors); GeDML's ties in the assignment go to the first branch on
the CPU, here always.

Example:
    >>> import numpy as np
    >>> from dmltf import losses
    >>> from dmltf.methods.drml import DRML, RelationEmbedder, build_drml_models
    >>> from dmltf.models import build_embedding_model
    >>> trunk = build_embedding_model("small_cnn", (8, 8, 1), embedding_dim=0, l2_normalize=False)
    >>> feature_model, embedder, embedding_model = build_drml_models(trunk, branches=4, embedding_dim=16)
    >>> branch = [losses.get("proxy_anchor", num_classes=2, embedding_dim=4) for _ in range(4)]
    >>> drml = DRML(feature_model, embedder, embedding_model, branch, losses.get("proxy_anchor", num_classes=2,
    ...             embedding_dim=16))
    >>> out = drml.compute_losses((np.random.rand(6, 8, 8, 1).astype("float32"), np.array([0, 0, 0, 1, 1, 1])))
    >>> sorted(out)[:4], round(float(sum(out[f"share_branch_{n}"] for n in range(1, 5))), 6)
    (['branch_1', 'branch_2', 'branch_3', 'branch_4'], 1.0)
"""
import math

import keras
from keras import ops

from dmltf import methods, registry
from dmltf.distances import l2_normalize
from dmltf.layers import L2Normalize
from dmltf.methods.base import LossRole, Method, OptimizerGroup, gather_global_batch, loss_weights_group

EMBEDDERS = ("relational", "multi")


def _fan_out_normal(units):
    """torch kaiming_normal_(mode='fan_out') of a Linear with ``units`` outputs: N(0, 2 / units)."""
    return keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / units))


@keras.saving.register_keras_serializable(package="dmltf")
class RelationEmbedder(keras.layers.Layer):
    """The trunk feature [B, F] -> (nodes [B, N, d], reconstruction errors [B, N], z [B, N d]).

    ``relational=False`` is the MultiEmbedder ablation (see the module docstring). The branches'
    linear maps are stacked ([N, in, out] kernels): one einsum computes all N.
    """

    def __init__(self, branches=4, node_dim=128, relational=True, **kwargs):
        super().__init__(**kwargs)
        self.branches, self.node_dim, self.relational = int(branches), int(node_dim), bool(relational)

    def build(self, input_shape):
        features, n, d = int(input_shape[-1]), self.branches, self.node_dim
        if n < 1 or features % n:
            raise ValueError(f"DRML splits the {features}-d trunk feature into --drml_branches={n} equal chunks: "
                             f"{features} is not a multiple of {n}")
        self.chunk_dim = chunk = features // n
        zeros = keras.initializers.Zeros()
        self.node_kernel = self.add_weight(name="node_kernel", shape=(n, chunk, d), initializer=_fan_out_normal(d))
        self.node_bias = self.add_weight(name="node_bias", shape=(n, d), initializer=zeros)
        target = chunk if self.relational else features  # MultiEmbedder decoders rebuild the whole feature
        self.decoder_kernel = self.add_weight(name="decoder_kernel", shape=(n, d, target),
                                              initializer=_fan_out_normal(target))
        self.decoder_bias = self.add_weight(name="decoder_bias", shape=(n, target), initializer=zeros)
        if self.relational:
            self.edge_a_kernel = self.add_weight(name="edge_a_kernel", shape=(n, chunk, d), initializer=_fan_out_normal(d))
            self.edge_a_bias = self.add_weight(name="edge_a_bias", shape=(n, d), initializer=zeros)
            self.edge_b_kernel = self.add_weight(name="edge_b_kernel", shape=(n, chunk, d), initializer=_fan_out_normal(d))
            self.edge_b_bias = self.add_weight(name="edge_b_bias", shape=(n, d), initializer=zeros)
            self.score_kernel = self.add_weight(name="score_kernel", shape=(d, 1), initializer=_fan_out_normal(1))
            self.score_bias = self.add_weight(name="score_bias", shape=(1,), initializer=zeros)
            identity_then_zero = lambda shape, dtype=None: ops.concatenate(  # noqa: E731
                [ops.eye(d, dtype=dtype), ops.zeros((d, d), dtype=dtype)], axis=0)
            self.integrator_kernel = self.add_weight(name="integrator_kernel", shape=(2 * d, d),
                                                     initializer=identity_then_zero)
            self.integrator_bias = self.add_weight(name="integrator_bias", shape=(d,), initializer=zeros)

    @property
    def decoder_variables(self):
        return [self.decoder_kernel, self.decoder_bias]

    @property
    def embedder_variables(self):
        decoder = {id(v) for v in self.decoder_variables}
        return [v for v in self.trainable_variables if id(v) not in decoder]

    @staticmethod
    def _linear(x, kernel, bias):
        """Branch-wise linear maps: x [B, N, in] -> [B, N, out]."""
        return ops.einsum("bni,nio->bno", x, kernel) + bias

    def call(self, features):
        n, d = self.branches, self.node_dim
        chunks = ops.reshape(features, (-1, n, self.chunk_dim))  # torch.chunk: contiguous, in order
        fixed_chunks = ops.stop_gradient(chunks)
        nodes = self._linear(chunks, self.node_kernel, self.node_bias)
        if self.relational:
            nodes = l2_normalize(nodes)
            target = fixed_chunks
        else:
            target = ops.stop_gradient(features)[:, None, :]
        rebuilt = self._linear(ops.stop_gradient(nodes), self.decoder_kernel, self.decoder_bias)
        errors = ops.mean(ops.square(rebuilt - target), axis=-1)  # [B, N]
        if not self.relational:
            return nodes, errors, ops.reshape(nodes, (-1, n * d))
        a = self._linear(fixed_chunks, self.edge_a_kernel, self.edge_a_bias)
        b = self._linear(fixed_chunks, self.edge_b_kernel, self.edge_b_bias)
        diff = a[:, :, None, :] - b[:, None, :, :]  # [B, i, j, d]
        scores = ops.relu(ops.squeeze(ops.matmul(diff, self.score_kernel), -1) + self.score_bias)
        scores = scores / ops.maximum(ops.sum(scores, axis=1, keepdims=True), 1e-12)  # F.normalize(p=1, dim=i)
        messages = ops.einsum("bij,bid->bjd", scores, nodes)
        updated = ops.matmul(ops.concatenate([nodes, messages], axis=-1), self.integrator_kernel) + self.integrator_bias
        return nodes, errors, ops.reshape(updated, (-1, n * d))

    def compute_output_shape(self, input_shape):
        batch, n, d = input_shape[0], self.branches, self.node_dim
        return (batch, n, d), (batch, n), (batch, n * d)

    def get_config(self):
        return {**super().get_config(), "branches": self.branches, "node_dim": self.node_dim,
                "relational": self.relational}


def build_drml_models(feature_model, *, branches=4, embedding_dim=512, relational=True, l2_normalize=True):
    """(feature_model, the RelationEmbedder, embedding_model: images -> z, L2-normalised unless told)."""
    if embedding_dim % branches:
        raise ValueError(f"DRML's embedding (--embedding_dim={embedding_dim}) concatenates --drml_branches={branches} "
                         f"equal nodes: {embedding_dim} is not a multiple of {branches}")
    # float32 whatever the policy: its L1 / L2 normalisations' 1e-12 floors underflow half precision
    # (0 / 0 scores), and it is a small head next to the trunk.
    embedder = RelationEmbedder(branches, embedding_dim // branches, relational, name="relation_embedder",
                                dtype="float32")
    images = keras.Input(feature_model.input_shape[1:], name="images")
    z = embedder(feature_model(images))[2]
    output = L2Normalize(name="l2_normalize")(z) if l2_normalize else z
    return feature_model, embedder, keras.Model(images, output, name="embedding_model")


@methods.register("drml")
class DRML(Method):
    """DRML on a trunk feature model (see the module docstring and :func:`build_drml_models`)."""

    # GeDML's trainer without a sampler: shuffled batches, the last partial one dropped.
    default_sampler = "random"
    loss_roles = {"branch": LossRole("each branch's loss on the samples assigned to it, with its own proxies",
                                     {"loss": "proxy_anchor", "proxy_initializer": "kaiming_normal_a_sqrt5"})}
    flag_help = {
        "branches": "N, the branches: the trunk feature splits into N chunks and the embedding concatenates N "
                    "nodes of --embedding_dim / N.",
        "embedder": "relational (DRML's RelationEmbedder) or multi (the MultiEmbedder ablation: no relational "
                    "module, decoders rebuild the whole feature; its reference recon weight is 0.1).",
        "repre_weight": "w_repre, the weight of the main --loss on the final embedding z.",
        "recon_weight": "w_recon, the weight of the reconstruction error (it trains only the decoders).",
    }

    @classmethod
    def from_parts(cls, parts, **hyperparameters):
        settings = {**registry.hyperparameters(cls), **hyperparameters}
        if settings["embedder"] not in EMBEDDERS:
            raise ValueError(f"--drml_embedder must be one of {', '.join(EMBEDDERS)}, got {settings['embedder']!r}")
        feature_model, embedder, embedding_model = build_drml_models(
            parts.feature_model(), branches=int(settings["branches"]), embedding_dim=parts.embedding_dim,
            relational=settings["embedder"] == "relational", l2_normalize=parts.l2_normalize)
        branch_losses = [parts.loss("branch", embedding_dim=embedder.node_dim) for _ in range(embedder.branches)]
        return cls(feature_model, embedder, embedding_model, branch_losses,
                   parts.loss(embedding_dim=parts.embedding_dim), **settings)

    def __init__(self, feature_model, relation_embedder, embedding_model, branch_losses, repre_loss, *, branches=4,
                 embedder="relational", repre_weight=10.0, recon_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        built = (relation_embedder.branches, "relational" if relation_embedder.relational else "multi")
        if built != (int(branches), embedder):
            raise ValueError(f"the RelationEmbedder has {built[0]} {built[1]} branches, the settings say {branches} "
                             f"{embedder}")
        if len(branch_losses) != relation_embedder.branches:
            raise ValueError(f"DRML needs one branch loss per branch: {len(branch_losses)} for {branches}")
        self.feature_model, self.embedder, self.embedding_model = feature_model, relation_embedder, embedding_model
        self.branch_losses, self.repre_loss = list(branch_losses), repre_loss
        self.repre_weight, self.recon_weight = float(repre_weight), float(recon_weight)

    def compute_losses(self, batch, training=True):
        images, labels = batch
        nodes, errors, z = self.embedder(self.feature_model(images, training=training), training=training)
        n, d = self.embedder.branches, self.embedder.node_dim
        # Per-sample values travel with the embeddings in one cross-replica gather: every value
        # below is the global batch's, the assignment included.
        columns = [ops.reshape(nodes, (-1, n * d)), z, errors]
        labels, gathered = gather_global_batch(labels, ops.concatenate([ops.cast(c, "float32") for c in columns], 1))
        nodes = ops.reshape(gathered[:, :n * d], (-1, n, d))
        z, errors = gathered[:, n * d:2 * n * d], gathered[:, 2 * n * d:]
        assigned = ops.one_hot(ops.argmin(errors, axis=1), n)  # [B, N]: 1 at each sample's branch
        out, total = {}, 0.0
        for i, loss in enumerate(self.branch_losses):
            out[f"branch_{i + 1}"] = branch = loss(labels, nodes[:, i], sample_weight=assigned[:, i])
            out[f"share_branch_{i + 1}"] = ops.mean(assigned[:, i])
            total = total + branch
        out["repre"] = self.repre_loss(labels, z)
        out["recon"] = ops.mean(errors)
        out["loss"] = total + self.repre_weight * out["repre"] + self.recon_weight * out["recon"]
        return out

    def optimizer_groups(self):
        backbone = self.feature_model.get_layer("backbone").trainable_variables
        backbone_ids = {id(v) for v in backbone}
        pooling = [v for v in self.feature_model.trainable_variables if id(v) not in backbone_ids]
        proxies = [v for loss in self.branch_losses for v in loss.trainable_variables]
        groups = [OptimizerGroup("backbone", backbone),
                  OptimizerGroup("embedder", pooling + self.embedder.embedder_variables),
                  OptimizerGroup("decoder", self.embedder.decoder_variables),
                  OptimizerGroup("ensemble", proxies, lr_multiplier=self.branch_losses[0].lr_multiplier),
                  loss_weights_group(self.repre_loss, name="repre")]
        return [g for g in groups if g.variables]

    def loss_layers(self):
        return [self.repre_loss, *self.branch_losses]
