"""A match threshold for a target precision, from the pairs of held-out labelled embeddings.

Every unordered pair {i, j}, i != j, of the calibration embeddings is a *positive* pair when the
two share a label and a *negative* one otherwise; the pair is *accepted* (a match) at threshold t
when its distance is <= t. Over the distinct pair distances t (ascending):

* precision(t) = #accepted positive pairs / #accepted pairs
* recall(t)    = #accepted positive pairs / #positive pairs

and the threshold returned is the largest t with precision(t) >= ``target_precision``: the
most recall at the asked precision. Distances are those of :mod:`dmltf.index.backends`
(euclidean L2, or cosine distance 1 - cos), so a threshold applies to ``Index.search`` results
and to ``Index.is_match`` alike.

References: TensorFlow Similarity ``Similarity.calibrate`` / ``match`` (a distance threshold per
target, then "within the threshold" decides a match) and pytorch-metric-learning
``InferenceModel.is_match`` (a pair is a match when its distance is within a threshold).
Deviations: TFSim calibrates on nearest-neighbour lookups of the calibration queries in the
index (:func:`dmltf.evaluation.verification.threshold_curve` computes that curve); here the curve
is over pairs, the question ``is_match(a, b)`` answers. The pairs are all pairs of the
calibration set, or of a seeded random subset of ``max_rows`` rows when it is larger (memory is
O(#pairs)). Pair distances are computed in float64 (not by the float32
:func:`dmltf.evaluation.verification.iter_pair_distances`): its ~1e-6 error would put the pair
that sets the threshold outside it when ``is_match`` measures it again.

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0], [0.1], [1.0], [1.2], [3.0]], "float32")
    >>> c = calibrate(x, np.array([0, 0, 1, 1, 1]), "euclidean", target_precision=1.0)
    >>> round(c.threshold, 3), round(c.precision, 3), round(c.recall, 3)
    (0.2, 1.0, 0.5)
"""
import dataclasses

import numpy as np

from dmltf.evaluation.search import prepare_embeddings, to_numpy
from dmltf.evaluation.verification import accepted_at_thresholds

MAX_ROWS = 8192  # 33.5 million pairs: ~300 MB of float64 distances and labels
CHUNK_ROWS = 512


@dataclasses.dataclass
class Calibration:
    """The chosen ``threshold`` with its ``precision`` and ``recall``, and the whole ``curve``
    (a dict of equal-length arrays ``threshold``, ``precision``, ``recall``, ascending thresholds)."""

    threshold: float
    target_precision: float
    precision: float
    recall: float
    num_pairs: int
    num_positive_pairs: int
    curve: dict

    def summary(self):
        """The JSON-able fields (no curve), as ``index.json`` stores them."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "curve"}


def pair_distances(embeddings, labels, metric):
    """(distances float64 [P], same-label bool [P]) of every pair i < j of ``embeddings``."""
    x = prepare_embeddings(embeddings, metric, "embeddings")
    labels = to_numpy(labels, "labels").reshape(-1)
    if len(labels) != len(x):
        raise ValueError(f"labels has {len(labels)} entries but the embeddings have {len(x)} rows")
    x = x.astype(np.float64)
    squares = (x * x).sum(axis=1)
    distances, same = [], []
    for start in range(0, len(x), CHUNK_ROWS):
        block = x[start:start + CHUNK_ROWS] @ x.T
        if metric == "euclidean":
            block = np.sqrt(np.maximum(squares[start:start + CHUNK_ROWS, None] + squares[None, :] - 2 * block, 0.0))
        else:
            block = np.maximum(1.0 - block, 0.0)
        for row, d in enumerate(block):
            i = start + row
            distances.append(d[i + 1:])
            same.append(labels[i + 1:] == labels[i])
    if not distances:
        return np.zeros(0), np.zeros(0, bool)
    return np.concatenate(distances), np.concatenate(same)


def pair_curve(distances, same):
    """Precision and recall of "distance <= t" over the pairs at every distinct distance t."""
    thresholds, accepted, tp = accepted_at_thresholds(distances, same)
    num_pos = int(same.sum())
    recall = tp / num_pos if num_pos else np.zeros(len(tp))
    return {"threshold": thresholds, "precision": tp / accepted, "recall": recall}


def calibrate(embeddings, labels, metric, target_precision=0.99, max_rows=MAX_ROWS, seed=0):
    """The :class:`Calibration` of the pairs of ``embeddings`` (module docstring)."""
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    embeddings, labels = to_numpy(embeddings, "embeddings"), to_numpy(labels, "labels").reshape(-1)
    if len(embeddings) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(embeddings), max_rows, replace=False))
        embeddings, labels = embeddings[rows], labels[rows]
    distances, same = pair_distances(embeddings, labels, metric)
    if not same.any() or same.all():
        raise ValueError(f"calibration needs positive and negative pairs (labels shared and not); the "
                         f"{len(same)} pairs of {len(labels)} embeddings have {int(same.sum())} positive")
    curve = pair_curve(distances, same)
    reached = np.flatnonzero(curve["precision"] >= target_precision)
    if not len(reached):
        best = int(np.argmax(curve["precision"]))
        raise ValueError(f"no threshold reaches precision {target_precision} on these pairs: the best is "
                         f"{curve['precision'][best]:.4f}, at distance {curve['threshold'][best]:.6g}")
    i = reached[-1]
    return Calibration(float(curve["threshold"][i]), float(target_precision), float(curve["precision"][i]),
                       float(curve["recall"][i]), len(same), int(same.sum()), curve)
