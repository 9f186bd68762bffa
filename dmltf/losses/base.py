"""The loss contract: ``MetricLoss``, ``PairLoss`` (distance + miner + reduction) and ``ProxyLoss``.

Every loss is a ``keras.layers.Layer`` called as
``loss(labels, embeddings, ref_labels=None, ref_embeddings=None) -> scalar``.
Without references the batch is compared with itself and a sample is never its own
positive; with references (cross-batch memory, a gathered global batch) the queries are
compared with them as given.

Subclasses implement ``compute_loss`` and return ``(losses, weights)``: a vector of per-element
terms and their 0/1 (or fractional) weights, which the reduction turns into a scalar. A loss
that reduces in its own way returns ``(scalar, None)``. The math always runs in float32, also
under a mixed-precision policy, and a batch without a valid element gives exactly 0.
"""
import keras
import tensorflow as tf
from keras import ops

from dmltf import distances as distances_lib
from dmltf import miners as miners_lib
from dmltf.miners.base import label_masks

REDUCTIONS = ("mean", "mean_nonzero", "sum")


def prepare_inputs(labels, embeddings, ref_labels=None, ref_embeddings=None):
    """Flatten labels to int32, cast embeddings to float32, default the references to the batch."""
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    embeddings = ops.cast(embeddings, "float32")
    same_source = ref_embeddings is None
    if same_source:
        if ref_labels is not None:
            raise ValueError("ref_labels given without ref_embeddings")
        return labels, embeddings, labels, embeddings, True
    if ref_labels is None:
        raise ValueError("ref_embeddings given without ref_labels")
    ref_labels = ops.cast(ops.reshape(ref_labels, (-1,)), "int32")
    return labels, embeddings, ref_labels, ops.cast(ref_embeddings, "float32"), False


def reduce(losses, weights, reduction):
    """Weighted reduction that gives 0 (and a zero gradient) when nothing is weighted."""
    return ops.sum(losses * weights) / reduction_count(losses, weights, reduction)


def reduction_count(losses, weights, reduction):
    """What ``reduce`` divides the weighted sum by (at least 1), for terms normalised alike."""
    if reduction == "sum":
        return 1.0
    if reduction == "mean":
        count = ops.sum(weights)
    elif reduction == "mean_nonzero":
        count = ops.sum(ops.cast(losses * weights > 0, "float32"))
    else:
        raise ValueError(f"Unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
    return ops.maximum(count, 1.0)


class MetricLoss(keras.layers.Layer):
    """Base of every dmltf loss (see the module docstring for the contract).

    ``lr_multiplier`` scales the learning rate of the loss's own weights (proxies, centres)
    in the trainer's optimizer groups; class attributes give each reference's default.
    """

    lr_multiplier = 1.0
    default_reduction = "mean"

    def __init__(self, reduction=None, lr_multiplier=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # weights and math stay float32 under mixed precision
        super().__init__(**kwargs)
        self.reduction = reduction or self.default_reduction
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"Unknown reduction {self.reduction!r}; valid: {', '.join(REDUCTIONS)}")
        if lr_multiplier is not None:
            self.lr_multiplier = float(lr_multiplier)

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None):
        labels, embeddings, ref_labels, ref_embeddings, same_source = prepare_inputs(
            labels, embeddings, ref_labels, ref_embeddings
        )
        losses, weights = self.compute_loss(labels, embeddings, ref_labels, ref_embeddings, same_source)
        if weights is None:
            return losses
        return reduce(losses, weights, self.reduction)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction, lr_multiplier=self.lr_multiplier)
        return config


class PairLoss(MetricLoss):
    """A loss on pairs or triplets of the batch: a distance, a miner and a reduction composed.

    Subclasses set ``default_distance`` / ``default_miner`` and implement
    ``pair_loss(mat, mined, distance)`` where ``mat`` is the [B, R] distance matrix and
    ``mined`` what the miner returned (:class:`~dmltf.miners.Pairs` or
    :class:`~dmltf.miners.Triplets`; convert with ``to_pairs`` / ``to_triplets``).
    """

    default_distance = "euclidean"
    default_miner = "all"
    requires_similarity = False  # True for losses defined on similarities (cosine, dot) only

    def __init__(self, distance=None, miner=None, **kwargs):
        super().__init__(**kwargs)
        self.distance = distances_lib.get(distance or self.default_distance)
        self.miner = miners_lib.get(miner or self.default_miner)
        if self.requires_similarity and not self.distance.is_inverted:
            raise ValueError(
                f"{type(self).__name__} is defined on similarities: use distance='cosine' or 'dot', "
                f"not {self.distance.name!r}"
            )

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source):
        mat, mined = self.mine(labels, embeddings, ref_labels, ref_embeddings, same_source)
        return self.pair_loss(mat, mined, self.distance)

    def mine(self, labels, embeddings, ref_labels, ref_embeddings, same_source):
        """The [B, R] matrix and the miner's selection (for losses that also need the embeddings)."""
        mat = self.distance.pairwise(embeddings, ref_embeddings)
        pos, neg = label_masks(labels, ref_labels, same_source)
        return mat, self.miner.mine_for_loss(mat, pos, neg, self.distance, embeddings, ref_embeddings)

    def pair_loss(self, mat, mined, distance):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(distance=self.distance.name, miner=miners_lib.serialize(self.miner))
        return config


class ProxyLoss(MetricLoss):
    """A loss that compares samples with learned class weights (proxies, centres, class weights).

    The weight is ``proxies`` of shape [num_classes, embedding_dim] unless a subclass overrides
    ``create_weights`` (``soft_triple``'s ``centers``). Samples are compared with the weights,
    not with each other, so ``ref_labels`` / ``ref_embeddings`` are accepted and ignored.
    Labels must lie in [0, num_classes); anything else raises ``InvalidArgumentError``.

    ``ortho_weight`` > 0 adds dml-tf's proxy orthogonality regulariser (``proxy_orthogonality``)
    on the rows of ``proxy_rows()``, times ``ortho_weight`` (dml-tf uses 0.1).
    """

    lr_multiplier = 100.0
    default_initializer = "normal"

    def __init__(self, num_classes, embedding_dim, initializer=None, ortho_weight=0.0, **kwargs):
        super().__init__(**kwargs)
        from dmltf.losses import initializers  # noqa: PLC0415 (avoids an import cycle)

        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.initializer = initializer or self.default_initializer
        self.ortho_weight = float(ortho_weight)
        self.create_weights(initializers.get(self.initializer))
        self.built = True  # all state exists now: optimizer groups and saving see it before a call

    def create_weights(self, initializer):
        self.proxies = self.add_weight(
            name="proxies", shape=(self.num_classes, self.embedding_dim), initializer=initializer, trainable=True
        )

    def proxy_rows(self):
        """The learned vectors as rows [N, embedding_dim], float32 (what the regulariser sees)."""
        return ops.cast(self.proxies, "float32")

    def regularization(self):
        """Scalar added to the reduced loss; subclasses add their own terms to this one."""
        if self.ortho_weight == 0.0:
            return 0.0
        return self.ortho_weight * proxy_orthogonality(self.proxy_rows())

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None):
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        checks = [
            tf.debugging.assert_non_negative(labels, message="label below 0 given to a proxy loss"),
            tf.debugging.assert_less(
                labels, self.num_classes, message=f"label >= num_classes={self.num_classes} given to a proxy loss"
            ),
        ]
        with tf.control_dependencies(checks):
            labels = tf.identity(labels)
        return super().call(labels, embeddings) + self.regularization()

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            embedding_dim=self.embedding_dim,
            initializer=self.initializer,
            ortho_weight=self.ortho_weight,
        )
        return config


def proxy_orthogonality(proxies):
    """dml-tf's regulariser on raw proxies P [C, D]:
    ``(1/C) sum_c (1 - |p_c|^2)^2 + sum_{c<c'} (p_c . p_c')^2 / (2 (C - 1))``."""
    gram = ops.matmul(proxies, ops.transpose(proxies))
    count = ops.cast(ops.shape(proxies)[0], "float32")
    norms = ops.mean(ops.square(1.0 - ops.diagonal(gram)))
    off_diagonal = ops.sum(ops.square(ops.triu(gram, k=1)))
    return norms + off_diagonal / (2.0 * ops.maximum(count - 1.0, 1.0))


def log_sum_exp(logits, mask, axis):
    """log(sum_{mask} exp(logits)) along ``axis``, computed stably; 0 where the mask is empty."""
    masked = ops.where(mask, logits, ops.full_like(logits, -1e30))
    any_valid = ops.any(mask, axis=axis)
    m = ops.where(any_valid, ops.max(masked, axis=axis), 0.0)
    s = ops.sum(ops.where(mask, ops.exp(masked - ops.expand_dims(m, axis)), 0.0), axis=axis)
    return ops.where(any_valid, m + ops.log(ops.where(any_valid, s, 1.0)), 0.0)


def log1p_sum_exp(logits, mask, axis):
    """log(1 + sum_{mask} exp(logits)) along ``axis``, computed stably; 0 where the mask is empty."""
    neg_inf = ops.full_like(logits, -1e30)
    masked = ops.where(mask, logits, neg_inf)
    m = ops.maximum(ops.max(masked, axis=axis), 0.0)
    s = ops.sum(ops.where(mask, ops.exp(masked - ops.expand_dims(m, axis)), 0.0), axis=axis)
    return m + ops.log(ops.exp(-m) + s)
