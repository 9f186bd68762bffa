"""Signal-to-noise-ratio contrastive loss: the contrastive loss on the SNR distance.

Reference: Yuan, Chen, Zhang, Huang & Wang 2019, "Signal-to-Noise Ratio: A Robust Distance
Metric for Deep Metric Learning" (CVPR); pytorch-metric-learning 2.9
``SignalToNoiseRatioContrastiveLoss`` (``ContrastiveLoss`` with ``SNRDistance``). The SNR
distance of an anchor x and a sample y is the variance of the noise y - x over the variance of
the signal x, over the embedding dimensions:

    d_snr(x, y) = var(y - x) / var(x) = |(y - mean(y)) - (x - mean(x))|^2 / |x - mean(x)|^2

(asymmetric; the variances' normalisation cancels). It is computed from centred Gram matrices,
so memory is O(B R), not PML's O(B R D) tensor of differences. Terms as ``contrastive``:
``[d - pos_margin]_+`` for positive pairs, ``[neg_margin - d]_+`` for negative pairs, each
part reduced separately (default: mean over the non-zero terms) and added; defaults
pos_margin 0, neg_margin 1, all pairs. Sample weights as ``contrastive``.

Deviations: PML's ``SNRDistance`` L2-normalises the embeddings first (its default
``normalize_embeddings=True``); here, as for every dmltf distance and as in the paper, the
embeddings are used as given (the embedding head normalises). PML refuses any other distance;
a dmltf pair loss takes ``distance`` like every other, and with another one this is
``contrastive`` on it. An embedding with zero variance (constant over its dimensions) has its
signal variance clipped at 1e-12.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[1.0, -1.0], [2.0, -2.0], [-1.0, 1.0]], "float32")
    >>> # positive pairs: var ratios 1 and 0.25; every negative pair's ratio is above neg_margin 1
    >>> round(float(get("snr_contrastive")(np.array([0, 0, 1]), x)), 4)
    0.625
"""
from keras import ops

from dmltf import distances as distances_lib
from dmltf.distances import Distance, SquaredEuclidean
from dmltf.losses import register
from dmltf.losses.contrastive import ContrastiveLoss

_MIN_VARIANCE = 1e-12


class SNRDistance(Distance):
    """d[i, j] = var(y_j - x_i) / var(x_i) over the embedding dimensions (not symmetric)."""

    name = "snr"

    def pairwise(self, x, y):
        center = lambda v: v - ops.mean(v, axis=-1, keepdims=True)  # noqa: E731
        xc, yc = center(x), center(y)
        signal = ops.maximum(ops.sum(ops.square(xc), axis=-1), _MIN_VARIANCE)
        return SquaredEuclidean().pairwise(xc, yc) / ops.expand_dims(signal, 1)


@register("snr_contrastive")
class SNRContrastiveLoss(ContrastiveLoss):
    default_distance = "snr"

    def __init__(self, distance=None, **kwargs):
        name = distance.get("name") if isinstance(distance, dict) else distance
        if name in (None, SNRDistance.name):
            distance = SNRDistance()
        super().__init__(distance=distances_lib.get(distance), **kwargs)
