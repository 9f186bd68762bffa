"""Multi-class N-pair loss, TF-contrib form (DVML's variant).

Reference: Sohn 2016, "Improved Deep Metric Learning with Multi-class N-pair Loss
Objective"; ``tf.contrib.losses.metric_learning.npairs_loss`` as used in DVML's
``lib/Losses.py`` (METHODS.md 1.5). With anchors A and positives P (one per class):
``mean_i CE(softmax(A_i . P^T), onehot(class of i)) + 0.25 l2_reg (mean_i |A_i|^2 + mean_j |P_j|^2)``,
inner products of the embeddings as given (no normalisation, no distance parameter).

Pairs from labels: the anchor of a class is its first sample in the batch, the positive its
second (HDML's ``NPairLossScheme`` batches, first half anchors and second half positives, are
one such layout); further samples and classes with a single sample are not used. With
references, the positive of a class is its first reference sample, and every class present in
the references is a column of the softmax (classes without an anchor are extra negatives).
The TF-contrib target (row-normalised same-label indicator) is one-hot here, since each class
has one positive. A batch without a pair gives 0.

Sample weights: zero-weight samples are skipped when the first and second sample of each
class are found, so any 0/1 weights give the loss of the kept samples. The cross-entropy of
anchor i weighs w_i w_p (its pair with its positive p) and takes the N-pair form
``log(1 + sum_n w_n exp(l_n - l_p))``: each negative column's exponential weighs that
column's sample, the positive's 1. Each squared norm of the regulariser weighs its sample.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("npair", l2_reg=0.0)
    >>> x = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]], "float32")
    >>> round(float(loss(np.array([0, 1, 0, 1]), x)), 6)  # log(1 + e^-16)
    0.0
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import MetricLoss, log_sum_exp, safe_divide


@register("npair")
class NPairLoss(MetricLoss):
    def __init__(self, l2_reg=0.002, **kwargs):
        super().__init__(**kwargs)
        self.l2_reg = float(l2_reg)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        first, second = first_and_second_occurrence(labels, weights.query > 0)
        column = second if same_source else first_and_second_occurrence(ref_labels, weights.ref > 0)[0]
        same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(ref_labels, 0))
        target = ops.logical_and(same, ops.expand_dims(column, 0))
        row = ops.logical_and(first, ops.any(target, axis=1))
        logits = ops.matmul(embeddings, ops.transpose(ref_embeddings))
        columns = ops.broadcast_to(ops.expand_dims(column, 0), ops.shape(logits))
        ref_w = ops.expand_dims(weights.ref, 0)
        exp_w = ops.where(target, 1.0, ref_w)
        xent = log_sum_exp(logits, columns, axis=1, weights=exp_w) - ops.sum(ops.where(target, logits, 0.0), axis=1)
        positive_w = ops.sum(ops.where(target, ref_w, 0.0), axis=1)
        row_w = ops.where(row, weights.query * positive_w, 0.0)
        anchor_w, column_w = ops.where(row, weights.query, 0.0), ops.where(column, weights.ref, 0.0)
        num_rows = ops.sum(ops.cast(row, "float32"))
        mean = lambda values, w: safe_divide(ops.sum(values * w), ops.sum(w))
        sq_norm = lambda x: ops.sum(ops.square(x), axis=1)
        l2 = 0.25 * self.l2_reg * (mean(sq_norm(embeddings), anchor_w) + mean(sq_norm(ref_embeddings), column_w))
        return ops.where(num_rows > 0, mean(xent, row_w) + l2, 0.0), None

    def get_config(self):
        return {**super().get_config(), "l2_reg": self.l2_reg}


def first_and_second_occurrence(labels, valid):
    """Boolean masks of the samples that are the first / the second of their label, in order,
    among the ``valid`` ones (the others are neither)."""
    n = ops.shape(labels)[0]
    index = ops.arange(n, dtype="int64")
    key = ops.cast(labels, "int64") * ops.cast(n, "int64") + index  # distinct: the sort is stable
    key = ops.where(valid, key, ops.max(key) + 1 + index)  # invalid samples last: none precedes a valid one
    order = ops.argsort(key)
    sorted_labels, sorted_valid = ops.take(labels, order), ops.take(valid, order)
    starts = ops.concatenate([ops.ones((1,), "bool"), ops.not_equal(sorted_labels[1:], sorted_labels[:-1])])
    seconds = ops.concatenate([ops.zeros((1,), "bool"), ops.logical_and(ops.logical_not(starts[1:]), starts[:-1])])
    inverse = ops.argsort(order)
    valid_only = lambda mask: ops.take(ops.logical_and(mask, sorted_valid), inverse)
    return valid_only(starts), valid_only(seconds)
