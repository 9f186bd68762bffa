"""Centroid triplet loss: each sample against its class's centroid and the other classes'.

Reference: Wieczorek, Rychalska & Dąbrowski, "On the Unreasonable Effectiveness of Centroids
in Image Retrieval", ICONIP 2021 (arXiv 2104.13643); formula, parameters and reduction as
pytorch-metric-learning 1.7.3 ``CentroidTripletLoss`` (``losses/centroid_triplet_loss.py``,
PML 1.x only: removed in 2.0). Every sample q of a class k with at least two samples is a
query; its positive is the centroid of the OTHER samples of k (the query left out, the
paper's "the rest M - 1 samples are used to build a prototype centroid"), its negatives the
centroids (all samples) of every other class of the batch, one triplet per other class:

    max(0, d(q, c_{k \\ q}) - d(q, c_j) + margin)       (softplus of it with ``soft=True``)

reduced as PML's ``TripletMarginLoss`` inside it: the mean over the non-zero triplets
(``reduction="mean_nonzero"``), margin 0.05. For a similarity s the triplet is
``s(q, c_j) - s(q, c_{k \\ q}) + margin`` (the centroids are means of the embeddings as given; a
cosine normalises them in the similarity, as PML's). Memory O(B^2 + B D).

The authors' training code (``mikwieczorek/centroids-reid``, ``train_ctl_model.py``) instead
applies a batch-hard triplet loss to the queries and their left-out centroids together (every
query and centroid an anchor); dmltf follows PML's all-triplets form.

Deviations from PML 1.7.3, whose index arithmetic is exact only on a batch of P classes of M
samples each with P <= 4:
* a class with one sample in the batch: PML raises; here that sample is no query (it has no
  other sample to build its positive from) and its centroid, itself, is a negative of the
  other classes' queries;
* P >= 5 classes of M samples each: PML splits each query's negatives with ``torch.chunk`` into
  P pieces and keeps the last, only the last 3 other classes' centroids; here all P - 1;
* classes of unequal sizes: PML's per-position concatenation mislabels the centroids of the
  classes that lack a sample at that position (they get ``labels[0]``) and slices the triplet
  list as if every element had as many triplets: its triplets are not of the form above.
PML's ``swap`` is not offered; ``triplets_per_anchor`` is always ``"all"``; PML's default
``LpDistance`` normalises the embeddings, dmltf's distances use them as given. PML takes no
references; dmltf does: the centroids are then the references' classes', a query's positive the
centroid of the references of its label (the query is not among them) and its negatives the
other reference classes' centroids. Memory O(B R + R^2 + (B + R) D).

Sample weights: centroids are the weighted means of their samples (``ref_sample_weight`` for
references); a triplet weighs w_q (a zero-weight sample is in no centroid and no triplet), so
0/1 weights are the batch without the zero-weight samples.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[0.0], [0.2], [1.0], [1.4]], "float32")
    >>> # centroids 0.1, 1.2; query 0: 0.2 - 1.2 + 1 = 0, the others 0.2, 0.5, 0.1: their mean
    >>> round(float(get("centroid_triplet", margin=1.0)(np.array([0, 0, 1, 1]), x)), 4)
    0.2667
"""
from keras import ops

from dmltf import distances as distances_lib
from dmltf.losses import register
from dmltf.losses.base import MetricLoss
from dmltf.losses.instance import first_of_each_label


def weighted_means(members, weights, embeddings):
    """([N, D] the weighted mean of each row's members (0 where none), [N] their summed weight)."""
    member_weights = ops.where(members, ops.expand_dims(weights, 0), 0.0)
    total = ops.sum(member_weights, axis=1)
    return ops.matmul(member_weights, embeddings) / ops.expand_dims(ops.where(total > 0, total, 1.0), 1), total


@register("centroid_triplet")
class CentroidTripletLoss(MetricLoss):
    default_reduction = "mean_nonzero"

    def __init__(self, margin=0.05, soft=False, distance="euclidean", **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.soft = bool(soft)
        self.distance = distances_lib.get(distance)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        ref_kept = weights.ref > 0
        same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(ref_labels, 0))  # [B, R]
        own_class = same
        if same_source:  # the query left out of its own centroid
            own_class = ops.logical_and(same, ops.logical_not(ops.cast(ops.eye(ops.shape(labels)[0]), "bool")))
        # [B, D]: each query's class without the query
        left_out, left_out_weight = weighted_means(own_class, weights.ref, ref_embeddings)
        ref_same = ops.equal(ops.expand_dims(ref_labels, 1), ops.expand_dims(ref_labels, 0))
        centroids, _ = weighted_means(ref_same, weights.ref, ref_embeddings)  # row j: the centroid of j's class
        ap = ops.diagonal(self.distance.pairwise(embeddings, left_out))  # [B]
        an = self.distance.pairwise(embeddings, centroids)  # [B, R]; column j stands for j's class
        is_query = ops.logical_and(weights.query > 0, left_out_weight > 0)
        negative = ops.logical_and(ops.expand_dims(first_of_each_label(ref_labels, ref_kept), 0), ops.logical_not(same))
        triplet = ops.logical_and(ops.expand_dims(is_query, 1), negative)
        violation = self.margin - self.distance.margin(ops.expand_dims(ap, 1), an)
        losses = ops.softplus(violation) if self.soft else ops.relu(violation)
        term_weights = ops.where(triplet, ops.expand_dims(weights.query, 1), 0.0)
        return ops.reshape(ops.where(triplet, losses, 0.0), (-1,)), ops.reshape(term_weights, (-1,))

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "soft": self.soft, "distance": self.distance.name}
