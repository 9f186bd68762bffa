"""Instance loss: every sample of the batch is a class of its own.

Reference: Zheng, Zheng, Garrett, Yang, Xu & Shen, "Dual-Path Convolutional Image-Text
Embeddings with Instance Loss", ACM TOMM 2020 (arXiv 1711.05535): each training instance is
its own class. In-batch form, parameters and reduction as pytorch-metric-learning 2.9
``InstanceLoss`` (``losses/instance_loss.py``): with the logits l_ij = gamma cos(x_i, x_j)
over every column j of the batch (the sample's own included), sample i's term is the
cross-entropy

    -log( exp(l_it) / sum_j exp(l_ij) )

with target column t = i, its own; the default reduction is the mean over the samples
(PML's ``MeanReducer``). Default gamma 64, as PML; the similarity is always the cosine (PML
asserts ``CosineSimilarity``). Labels do not enter this default: it is PML's ``labels=None``
branch, which is also PML's result for distinct labels sorted in batch order.

PML quirk, behind ``label_rank_targets=True``: given labels, PML 2.9 takes the target column
of sample i from ``torch.unique(labels, return_inverse=True)``, the RANK of i's label among
the batch's distinct labels, used as a batch column index: sample i is pushed towards
whichever sample stands at that position, of any class. It is the instance loss only for
distinct labels sorted in batch order; dmltf reproduces it for PML's numbers.

References (PML refuses them): the instances are named by the labels, as image i and text i of
the paper's image-text pairs share instance i: the logits are over the references, and query
i's targets are the references of its label (the log of their summed probability; a query
without one adds no term). ``label_rank_targets`` takes no references.

Sample weights: sample i's term weighs w_i and each exponential of its softmax (of the target's
too) the weight of column j's sample; with ``label_rank_targets`` the ranks and columns are
those of the samples of non-zero weight, so 0/1 weights are the batch without the zero-weight
samples, as for every loss.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    >>> round(float(get("instance", gamma=1.0)(np.array([0, 1]), x)), 4)  # log(1 + e^-1): cos 1 vs 0
    0.3133
"""
from keras import ops

from dmltf import distances as distances_lib
from dmltf.losses import register
from dmltf.losses.base import MetricLoss, log_sum_exp


def first_of_each_label(labels, kept):
    """[B] bool: the first kept sample of each label (it stands for its class, counted once)."""
    n = ops.shape(labels)[0]
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
    earlier = ops.cast(ops.tril(ops.ones((n, n)), k=-1), "bool")  # [j, k]: k before j
    kept_earlier_same = ops.logical_and(ops.logical_and(same, earlier), ops.expand_dims(kept, 0))
    return ops.logical_and(kept, ops.logical_not(ops.any(kept_earlier_same, axis=1)))


def label_rank_columns(labels, kept):
    """[B, B] bool: column j is sample i's target when j is, among the kept samples, at the
    position of the rank of i's label among the kept samples' distinct labels (PML 2.9's
    ``torch.unique(labels, return_inverse=True)`` index, on the batch of kept samples)."""
    first = first_of_each_label(labels, kept)
    below = ops.logical_and(ops.expand_dims(first, 0), ops.expand_dims(labels, 0) < ops.expand_dims(labels, 1))
    rank = ops.sum(ops.cast(below, "int32"), axis=1)  # [B]
    position = ops.cumsum(ops.cast(kept, "int32")) - 1  # of each kept column among the kept ones
    return ops.logical_and(ops.expand_dims(kept, 0), ops.equal(ops.expand_dims(position, 0), ops.expand_dims(rank, 1)))


@register("instance")
class InstanceLoss(MetricLoss):
    def __init__(self, gamma=64.0, label_rank_targets=False, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        self.label_rank_targets = bool(label_rank_targets)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        logits = self.gamma * distances_lib.get("cosine").pairwise(embeddings, ref_embeddings)  # [B, R]
        ref_kept = ops.broadcast_to(ops.expand_dims(weights.ref > 0, 0), ops.shape(logits))
        if not same_source:
            if self.label_rank_targets:
                raise ValueError("instance: label_rank_targets (PML 2.9's batch column index) is defined on the "
                                 "batch alone, not with references")
            target = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(ref_labels, 0))
        elif self.label_rank_targets:
            target = label_rank_columns(labels, weights.query > 0)
        else:
            target = ops.cast(ops.eye(ops.shape(labels)[0]), "bool")
        target = ops.logical_and(target, ref_kept)
        ref_w = ops.expand_dims(weights.ref, 0)
        terms = (log_sum_exp(logits, ref_kept, axis=1, weights=ref_w)
                 - log_sum_exp(logits, target, axis=1, weights=ref_w))
        has_term = ops.logical_and(weights.query > 0, ops.any(target, axis=1))
        return ops.where(has_term, terms, 0.0), ops.where(has_term, weights.query, 0.0)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "label_rank_targets": self.label_rank_targets}
