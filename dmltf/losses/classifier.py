"""Shared base of the losses that are a softmax cross-entropy over per-class logits.

The softmax family (``softmax``, ``normalized_softmax``, ``arcface``, ``cosface``), the NCA
family (``proxy_nca``, ``proxy_nca_pp``) and ``soft_triple`` differ only in how they turn the
embeddings and the class weights into logits [B, C]. Per sample:
``log sum_{c in denominator} exp(logit_c) - logit_y``, where the denominator holds every class,
or every class but y with ``exclude_positive`` (ProxyNCA as published). Classes absent from the
batch stay in every denominator, as in all the references. Sample weights: each sample's
term weighs w_i (the mean divides by the summed weights); the class weights are not weighted.
"""
from keras import ops

from dmltf.distances import Cosine
from dmltf.losses.base import ProxyLoss, log_sum_exp


class ClassifierLoss(ProxyLoss):
    """Cross-entropy over ``self.logits(labels, embeddings)``; subclasses implement ``logits``."""

    lr_multiplier = 1.0
    exclude_positive = False

    def logits(self, labels, embeddings):
        raise NotImplementedError

    def cosine(self, embeddings):
        """cos(x_i, p_c) [B, C] of the embeddings and the proxies."""
        return Cosine().pairwise(embeddings, ops.cast(self.proxies, "float32"))

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        logits = self.logits(labels, embeddings)
        is_pos = ops.cast(ops.one_hot(labels, self.num_classes), "bool")
        denominator = ops.logical_not(is_pos) if self.exclude_positive else ops.ones_like(is_pos)
        positive = ops.sum(ops.where(is_pos, logits, 0.0), axis=1)
        losses = log_sum_exp(logits, denominator, axis=1) - positive
        return losses, weights.query
