"""The loss contract: ``MetricLoss``, ``PairLoss`` (distance + miner + reduction) and ``ProxyLoss``.

Every loss is a ``keras.layers.Layer`` called as
``loss(labels, embeddings, ref_labels=None, ref_embeddings=None, sample_weight=None) -> scalar``.
Without references the batch is compared with itself and a sample is never its own
positive; with references (cross-batch memory, a gathered global batch) the queries are
compared with them as given.

``sample_weight`` is a float vector [B] of non-negative weights of the queries; without
references it is also the weight of the reference side (the batch itself), with references
``ref_sample_weight`` [R] weighs them (1 where not given): a memory bank's empty rows, the second
views of dropped samples. A weight of 0 drops a sample from every pair, triplet and proxy
term it is in, as anchor, positive, negative or reference, and from the miner's choices (the
miner is given label masks without its pairs). Fractional weights scale each term by the
product of the weights of the samples in it: a pair (i, j) by w_i w_j, a triplet by
w_a w_p w_n, a sample's (proxy or class) term by w_i. The ``mean`` reduction divides by the
summed term weights, ``mean_nonzero`` by the summed weights of the non-zero terms. Where a
loss sums exponentials inside one term (a log-sum-exp over an anchor's pairs or a proxy's
samples), each exponential is scaled by the weight of the sample it brings in and the term
by the weights of the samples it is built around; each loss's docstring says how its terms
are weighted. So with 0/1 weights ``loss(y, x, sample_weight=w)`` equals
``loss(y[w == 1], x[w == 1])``, all-zero weights give exactly 0 with a zero gradient, and a
zero-weight sample gets exactly zero gradient. ``sample_weight=None`` is weight 1 everywhere.
Likewise ``loss(y, x, ry, rx, ref_sample_weight=w)`` with 0/1 weights equals
``loss(y, x, ry[w == 1], rx[w == 1])``, without a data-dependent shape (so also inside ``jax.jit``).

A loss may take further per-call inputs as keywords of the call, passed on to its
``compute_loss`` (Smooth-AP's ``rank_weights``); a loss that takes none refuses them.

Subclasses implement ``compute_loss`` and return ``(losses, weights)``: a vector of per-element
terms and their (sample-weighted) term weights, which the reduction turns into a scalar. A
loss that reduces in its own way returns ``(scalar, None)``. The math always runs in float32,
also under a mixed-precision policy, and a batch without a valid element gives exactly 0.

Regularizers (``dmltf.regularizers``; pytorch-metric-learning 2.9's
``losses/base_metric_loss_function.py`` and ``losses/mixins.py``): every loss takes
``embedding_regularizer`` (on the query embeddings, never the references, as PML) times
``embedding_reg_weight`` and, a loss with learned rows (``proxy_rows()``: proxies, class
weights [C, D], PML's ``W.t()``), ``weight_regularizer`` times ``weight_reg_weight``; the
call's value is the loss plus both. ``parts(...)`` returns them apart, ``{"main": ...,
"embedding_reg": ..., "weight_reg": ...}`` (the regularizers given), as ``MetricLearner`` logs
them. Deviations: the embedding regularizer must be row-wise (``lp``, ``zero_mean``) and is
the sample-weighted mean of its row terms (a zero-weight sample contributes nothing, all zero
gives 0); the weight regularizer involves no sample and gives 0 only when every sample weight
is 0 (as ``ortho_weight``). A composite loss with its own ``parts`` (``multiple_losses``)
takes no regularizer: give it to the parts.
"""
from typing import NamedTuple

import keras
from keras import ops

from dmltf import distances as distances_lib
from dmltf.backend import check_labels_below
from dmltf import miners as miners_lib
from dmltf import regularizers as regularizers_lib
from dmltf.miners.base import Triplets, label_masks, to_triplets

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


class SampleWeights(NamedTuple):
    """Float32 weights of the queries [B] and of the references [R] (see the module docstring)."""

    query: object
    ref: object

    def pairs(self):
        """[B, R]: the weight w_i w_j of each (query i, reference j) pair."""
        return ops.expand_dims(self.query, 1) * ops.expand_dims(self.ref, 0)

    def label_masks(self, labels, ref_labels, same_source):
        """``label_masks`` without the pairs of a zero-weight sample: what miners and losses see."""
        pos, neg = label_masks(labels, ref_labels, same_source)
        kept = ops.logical_and(ops.expand_dims(self.query > 0, 1), ops.expand_dims(self.ref > 0, 0))
        return ops.logical_and(pos, kept), ops.logical_and(neg, kept)

    def weigh(self, mined):
        """A miner's selection with each pair / triplet weight times its samples' weights."""
        if isinstance(mined, Triplets):
            samples = ops.take(self.query, mined.anchor) * ops.take(self.ref, mined.positive)
            return mined._replace(weight=mined.weight * samples * ops.take(self.ref, mined.negative))
        pair_weights = self.pairs()
        return mined._replace(pos=mined.pos * pair_weights, neg=mined.neg * pair_weights)


def prepare_weights(sample_weight, labels, ref_labels, same_source, ref_sample_weight=None):
    """The :class:`SampleWeights` of a call: 1 where not given, the batch's own without references."""
    as_vector = lambda w, like: (ops.ones(ops.shape(like), "float32") if w is None  # noqa: E731
                                 else ops.cast(ops.reshape(w, (-1,)), "float32"))
    query = as_vector(sample_weight, labels)
    if same_source:
        if ref_sample_weight is not None:
            raise ValueError("ref_sample_weight given without ref_embeddings (the batch's weights are sample_weight)")
        return SampleWeights(query, query)
    return SampleWeights(query, as_vector(ref_sample_weight, ref_labels))


def with_ref_sample_weight(inputs, ref_sample_weight):
    """A call's keyword inputs with ``ref_sample_weight`` added when given: losses that take no
    references of their own (two views) keep refusing it by name."""
    return inputs if ref_sample_weight is None else {**inputs, "ref_sample_weight": ref_sample_weight}


def nonzero_or_one(count):
    """count, or 1 where it is 0: the divisor of a weighted sum that may have no weight."""
    return ops.where(count > 0, count, 1.0)


def safe_divide(total, count):
    """total / count, and total itself (0 for weighted sums) where count is 0."""
    return total / nonzero_or_one(count)


def reduce(losses, weights, reduction):
    """Weighted reduction that gives 0 (and a zero gradient) when nothing is weighted."""
    return safe_divide(ops.sum(losses * weights), reduction_count(losses, weights, reduction))


def reduction_count(losses, weights, reduction):
    """What ``reduce`` divides the weighted sum by, for terms normalised alike: the summed
    weights (of the non-zero terms for ``mean_nonzero``), or 1 for ``sum``."""
    if reduction == "sum":
        return 1.0
    if reduction == "mean":
        return ops.sum(weights)
    if reduction == "mean_nonzero":
        return ops.sum(ops.where(losses * weights > 0, weights, 0.0))
    raise ValueError(f"Unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")


class MetricLoss(keras.layers.Layer):
    """Base of every dmltf loss (see the module docstring for the contract).

    ``lr_multiplier`` scales the learning rate of the loss's own weights (proxies, centres)
    in the trainer's optimizer groups; class attributes give each reference's default.
    """

    lr_multiplier = 1.0
    default_reduction = "mean"

    def __init__(self, reduction=None, lr_multiplier=None, embedding_regularizer=None, embedding_reg_weight=1.0,
                 weight_regularizer=None, weight_reg_weight=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # weights and math stay float32 under mixed precision
        super().__init__(**kwargs)
        self.reduction = reduction or self.default_reduction
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"Unknown reduction {self.reduction!r}; valid: {', '.join(REDUCTIONS)}")
        if lr_multiplier is not None:
            self.lr_multiplier = float(lr_multiplier)
        self.embedding_regularizer = regularizers_lib.get(embedding_regularizer)
        self.weight_regularizer = regularizers_lib.get(weight_regularizer)
        self.embedding_reg_weight, self.weight_reg_weight = float(embedding_reg_weight), float(weight_reg_weight)
        name = type(self).__name__
        if self.regularized and type(self).parts is not MetricLoss.parts:
            raise ValueError(f"{name} has parts of its own: give the regularizer to its parts")
        if self.embedding_regularizer is not None and not self.embedding_regularizer.row_wise:
            raise ValueError(f"{name}: embedding_regularizer={self.embedding_regularizer!r} couples the rows "
                             f"(a weight regularizer); row-wise ones: lp, zero_mean")
        if self.weight_regularizer is not None and not hasattr(self, "proxy_rows"):
            raise ValueError(f"{name}: weight_regularizer={self.weight_regularizer!r} given, but the loss has no "
                             f"class weights or proxies to regularize")

    @property
    def regularized(self):
        return self.embedding_regularizer is not None or self.weight_regularizer is not None

    @property
    def logs_parts(self):
        """Whether ``parts()`` has more than the main part (a regularized or composite loss)."""
        return self.regularized or type(self).parts is not MetricLoss.parts

    def __call__(self, labels, embeddings, ref_labels=None, ref_embeddings=None, sample_weight=None,
                 ref_sample_weight=None, **inputs):
        inputs = with_ref_sample_weight(inputs, ref_sample_weight)
        value = super().__call__(labels, embeddings, ref_labels, ref_embeddings, sample_weight=sample_weight, **inputs)
        if not self.regularized:
            return value
        return value + sum(self.regularization_parts(embeddings, sample_weight).values())

    def parts(self, labels, embeddings, ref_labels=None, ref_embeddings=None, sample_weight=None,
              ref_sample_weight=None, **inputs):
        """{"main": the loss, "embedding_reg" / "weight_reg": each weighted regularizer given}."""
        inputs = with_ref_sample_weight(inputs, ref_sample_weight)
        main = super().__call__(labels, embeddings, ref_labels, ref_embeddings, sample_weight=sample_weight, **inputs)
        return {"main": main, **self.regularization_parts(embeddings, sample_weight)}

    def regularization_parts(self, embeddings, sample_weight=None):
        """The weighted regularization terms of a call (see the module docstring)."""
        parts = {}
        if self.embedding_regularizer is not None:
            parts["embedding_reg"] = self.embedding_reg_weight * self.embedding_regularizer(
                ops.cast(embeddings, "float32"), sample_weight)
        if self.weight_regularizer is not None:
            reg = self.weight_reg_weight * self.weight_regularizer(self.proxy_rows())
            if sample_weight is not None:  # as ortho_weight: a batch of zero weights moves nothing
                reg = ops.where(ops.any(ops.reshape(sample_weight, (-1,)) > 0), reg, 0.0)
            parts["weight_reg"] = reg
        return parts

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None, sample_weight=None,
             ref_sample_weight=None, **inputs):
        labels, embeddings, ref_labels, ref_embeddings, same_source = prepare_inputs(
            labels, embeddings, ref_labels, ref_embeddings
        )
        weights = prepare_weights(sample_weight, labels, ref_labels, same_source, ref_sample_weight)
        losses, term_weights = self.compute_loss(labels, embeddings, ref_labels, ref_embeddings, same_source, weights,
                                                 **inputs)
        if term_weights is None:
            return losses
        return reduce(losses, term_weights, self.reduction)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        """``weights`` is the call's :class:`SampleWeights`."""
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction, lr_multiplier=self.lr_multiplier,
                      embedding_regularizer=regularizers_lib.serialize(self.embedding_regularizer),
                      embedding_reg_weight=self.embedding_reg_weight,
                      weight_regularizer=regularizers_lib.serialize(self.weight_regularizer),
                      weight_reg_weight=self.weight_reg_weight)
        return config


class PairLoss(MetricLoss):
    """A loss on pairs or triplets of the batch: a distance, a miner and a reduction composed.

    Subclasses set ``default_distance`` / ``default_miner`` and implement
    ``pair_loss(mat, mined, distance, weights)`` where ``mat`` is the [B, R] distance matrix,
    ``mined`` what the miner returned (:class:`~dmltf.miners.Pairs` or
    :class:`~dmltf.miners.Triplets`; convert with ``to_pairs`` / ``to_triplets``) and
    ``weights`` the :class:`SampleWeights`. The miner never sees a pair of a zero-weight
    sample, and each selected pair / triplet's 0/1 weight comes multiplied by its samples'
    weights (w_i w_j, w_a w_p w_n): losses on the selected tuples as terms need nothing more.
    Losses on triplets set ``uses_triplets``: they get the selection as ``Triplets``, pairs
    expanded before the weighting (expanding weighted pairs would count w_a twice).
    """

    default_distance = "euclidean"
    default_miner = "all"
    requires_similarity = False  # True for losses defined on similarities (cosine, dot) only
    uses_triplets = False

    def __init__(self, distance=None, miner=None, **kwargs):
        super().__init__(**kwargs)
        self.distance = distances_lib.get(distance or self.default_distance)
        self.miner = miners_lib.get(miner or self.default_miner)
        if self.requires_similarity and not self.distance.is_inverted:
            raise ValueError(
                f"{type(self).__name__} is defined on similarities: use distance='cosine' or 'dot', "
                f"not {self.distance.name!r}"
            )

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        mat, mined = self.mine(labels, embeddings, ref_labels, ref_embeddings, same_source, weights)
        return self.pair_loss(mat, mined, self.distance, weights)

    def mine(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        """The [B, R] matrix and the miner's sample-weighted selection (for losses that also
        need the embeddings)."""
        mat = self.distance.pairwise(embeddings, ref_embeddings)
        pos, neg = weights.label_masks(labels, ref_labels, same_source)
        mined = self.miner.mine_for_loss(mat, pos, neg, self.distance, embeddings, ref_embeddings)
        return mat, weights.weigh(to_triplets(mined) if self.uses_triplets else mined)

    def pair_loss(self, mat, mined, distance, weights):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(distance=self.distance.name, miner=miners_lib.serialize(self.miner))
        return config


class ProxyLoss(MetricLoss):
    """A loss that compares samples with learned class weights (proxies, centres, class weights).

    The weight is ``proxies`` of shape [num_classes, embedding_dim] unless a subclass overrides
    ``create_weights`` (``soft_triple``'s ``centers``). Samples are compared with the weights,
    not with each other, so ``ref_labels`` / ``ref_embeddings`` / ``ref_sample_weight`` are accepted and
    ignored.
    Labels must lie in [0, num_classes); anything else raises (``dmltf.backend.check_labels_below``).

    ``ortho_weight`` > 0 adds dml-tf's proxy orthogonality regulariser (``proxy_orthogonality``)
    on the rows of ``proxy_rows()``, times ``ortho_weight`` (dml-tf uses 0.1).
    The regularisers involve no sample, so sample weights leave them as they are, except that
    a batch given ``sample_weight`` all 0 gives 0 (it moves nothing, the proxies included).
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

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None, sample_weight=None,
             ref_sample_weight=None):
        labels = check_labels_below(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.num_classes, "a proxy loss")
        regularization = self.regularization()
        if sample_weight is not None:
            regularization = ops.where(ops.any(ops.reshape(sample_weight, (-1,)) > 0), regularization, 0.0)
        return super().call(labels, embeddings, sample_weight=sample_weight) + regularization

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


def log_weights(logits, mask, weights):
    """``logits + log(weights)`` and the mask without zero weights: sums of exp(logits) scaled by
    ``weights`` (broadcastable to the logits), as the log-sum-exps below take them."""
    weights = ops.broadcast_to(weights, ops.shape(logits))
    positive = weights > 0
    return logits + ops.log(ops.where(positive, weights, 1.0)), ops.logical_and(mask, positive)


def log_sum_exp(logits, mask, axis, weights=None):
    """log(sum_{mask} weights exp(logits)) along ``axis``, computed stably; 0 where the mask is empty."""
    if weights is not None:
        logits, mask = log_weights(logits, mask, weights)
    masked = ops.where(mask, logits, ops.full_like(logits, -1e30))
    any_valid = ops.any(mask, axis=axis)
    m = ops.where(any_valid, ops.max(masked, axis=axis), 0.0)
    s = ops.sum(ops.where(mask, ops.exp(masked - ops.expand_dims(m, axis)), 0.0), axis=axis)
    return ops.where(any_valid, m + ops.log(ops.where(any_valid, s, 1.0)), 0.0)


def log1p_sum_exp(logits, mask, axis, weights=None):
    """log(1 + sum_{mask} weights exp(logits)) along ``axis``, computed stably; 0 where the mask is empty."""
    if weights is not None:
        logits, mask = log_weights(logits, mask, weights)
    neg_inf = ops.full_like(logits, -1e30)
    masked = ops.where(mask, logits, neg_inf)
    m = ops.maximum(ops.max(masked, axis=axis), 0.0)
    s = ops.sum(ops.where(mask, ops.exp(masked - ops.expand_dims(m, axis)), 0.0), axis=axis)
    return m + ops.log(ops.exp(-m) + s)
