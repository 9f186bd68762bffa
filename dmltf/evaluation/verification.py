"""Threshold-based (verification) metrics: FNMR@FMR over all pairs, and a precision / recall
curve of nearest-neighbour matches as the acceptance threshold moves.

Scores are those of :mod:`.search`: euclidean distances (smaller is closer), or cosine / dot
similarities (larger is closer). A pair or match is *accepted* at threshold t when its distance
is <= t (similarity >= t).

**FNMR@FMR** (OML ``calc_fnmr_at_fmr``; Biometrics "false non-match rate at a false match
rate"). The pairs are every (query, reference) pair, each query's own entry excluded when the
queries are the references; positive pairs share a label, negative pairs do not (lone queries
contribute negatives only). With ``d`` the distance (for similarities ``d = -s``):

* ``T = quantile(d over negative pairs, FMR)``   (numpy's default linear interpolation, as OML)
* ``FNMR@FMR = #{positive pairs with d >= T} / #positive pairs``

NaN when there is no positive or no negative pair. The metric name is ``fnmr@fmr=<FMR>`` with
FMR a fraction in [0, 1] (``fnmr@fmr=0.01``; OML's current unit, its older releases used
percent). Exact: the pairs are visited in chunks of queries; all positive distances are kept
and, of the negatives, only the ``ceil((N - 1) * FMR) + 1`` smallest (all that the quantile reads), so
memory is O(#positive pairs + FMR * #negative pairs + chunk * R).
Deviation: OML v4 computes it from the retrieved top-k lists only (an approximation whose
value depends on k); here every pair is used, as OML's earlier releases did on the full matrix.

**Threshold curve** (TensorFlow Similarity ``MemoryEvaluator.calibrate`` with the
``match_nearest`` matcher): each query's nearest reference (own entry excluded) is its match;
at threshold t a query is accepted when the match's score is within t, and

* TP = accepted, the match has the query's label;   FP = accepted, another label
* FN = rejected, the match has the query's label;   TN = rejected, another label
* precision = TP / (TP + FP), recall = TP / (TP + FN), f1 = 2 P R / (P + R)  (0 where the
  denominator is 0, TFSim's ``divide_no_nan``)

evaluated at every distinct match score (TFSim's calibration thresholds), strictest first. Lone
queries are kept: their match is always wrong, so they count as FP or TN (a verification system
should reject them). Deviation: TFSim rounds the distances to 8 digits first; here they are used
as computed.

Example:
    >>> import numpy as np
    >>> from dmltf.evaluation import verification
    >>> x = np.array([[0.0], [0.1], [1.0], [1.3], [5.0]], "float32")
    >>> y = np.array([0, 0, 1, 1, 2])
    >>> c = verification.threshold_curve(x, y)
    >>> c["threshold"].round(2).tolist(), c["precision"].round(2).tolist(), c["recall"].round(2).tolist()
    ([0.1, 0.3, 3.7], [1.0, 1.0, 0.8], [0.5, 1.0, 1.0])
"""
import math
import re

import numpy as np
from keras import ops

from dmltf import distances as distances_lib
from dmltf.evaluation.search import (TF_CHUNK_BYTES, iter_knn, prepare_embeddings, resolve_backend,
                                     to_numpy)

FNMR_PATTERN = re.compile(r"fnmr@fmr=((?:0|1)(?:\.[0-9]*)?|\.[0-9]+)")


def parse_fnmr(name):
    """The FMR of a ``fnmr@fmr=<FMR>`` name, or None if ``name`` is not one (or FMR > 1)."""
    m = FNMR_PATTERN.fullmatch(name) if isinstance(name, str) else None
    if not m:
        return None
    fmr = float(m.group(1))
    return fmr if 0.0 <= fmr <= 1.0 else None


def _codes(labels, ref_labels):
    _, codes = np.unique(np.concatenate([labels, ref_labels]), return_inverse=True)
    return codes[: len(labels)], codes[len(labels) :]


def fnmr_from_distances(pos_dist, neg_dist, fmr_values=(0.1,)):
    """{fmr: FNMR@FMR} from given positive / negative pair distances (OML's formula, float64).

    Example (OML's docstring):
        >>> pos = np.array([0, 0, 1, 1, 2, 2, 5, 5, 9, 9])
        >>> neg = np.array([3, 3, 4, 4, 6, 6, 7, 7, 8, 8])
        >>> {f: round(v, 3) for f, v in fnmr_from_distances(pos, neg, (0.1, 0.5)).items()}
        {0.1: 0.4, 0.5: 0.2}
    """
    pos, neg = np.asarray(pos_dist, np.float64).reshape(-1), np.asarray(neg_dist, np.float64).reshape(-1)
    if not len(pos) or not len(neg):
        return {float(f): float("nan") for f in fmr_values}
    return {float(f): float(np.mean(pos >= np.quantile(neg, f))) for f in fmr_values}


def iter_pair_distances(queries, refs, exclude_self, distance, chunk_size=None):
    """Yields ``(start, d)``: [chunk, R] float32 "smaller is closer" scores of prepared inputs
    (euclidean distances; negated similarities for cosine / dot)."""
    is_euclidean = distance == "euclidean"
    pairwise = distances_lib.get("squared_euclidean" if is_euclidean else "dot").pairwise
    refs_t = ops.convert_to_tensor(refs)
    chunk_size = chunk_size or max(1, TF_CHUNK_BYTES // (4 * len(refs)))
    for start in range(0, len(queries), chunk_size):
        scores = ops.convert_to_numpy(pairwise(ops.convert_to_tensor(queries[start : start + chunk_size]), refs_t))
        d = np.sqrt(np.maximum(scores, 0.0)) if is_euclidean else -scores
        yield start, d


def fnmr_at_fmr(embeddings, labels, fmr_values=(0.1,), ref_embeddings=None, ref_labels=None,
                distance="euclidean", chunk_size=None):
    """{fmr: FNMR@FMR} of the pairs (see the module docstring); ``fmr_values`` are fractions."""
    fmr_values = tuple(float(f) for f in fmr_values)
    if not fmr_values or not all(0.0 <= f <= 1.0 for f in fmr_values):
        raise ValueError(f"fmr_values must be fractions in [0, 1], got {fmr_values}")
    queries, query_labels, refs, ref_labels, exclude_self = _prepare(
        embeddings, labels, ref_embeddings, ref_labels, distance)
    query_codes, ref_codes = _codes(query_labels, ref_labels)
    same_count = np.bincount(ref_codes, minlength=max(query_codes.max(), ref_codes.max()) + 1)[query_codes]
    num_pos = int(same_count.sum()) - int(exclude_self) * len(queries)
    num_neg = len(queries) * (len(refs) - int(exclude_self)) - num_pos
    if num_pos == 0 or num_neg == 0:
        return {f: float("nan") for f in fmr_values}
    keep = min(num_neg, math.ceil((num_neg - 1) * max(fmr_values)) + 1)  # what np.quantile reads
    positives, smallest = [], np.zeros(0, "float32")
    for start, d in iter_pair_distances(queries, refs, exclude_self, distance, chunk_size):
        rows = np.arange(start, start + len(d))
        same = query_codes[rows][:, None] == ref_codes[None, :]
        valid = np.ones_like(same)
        if exclude_self:
            valid[np.arange(len(d)), rows] = False
        positives.append(d[same & valid])
        negatives = np.concatenate([smallest, d[~same & valid]])
        smallest = negatives if len(negatives) <= keep else np.partition(negatives, keep - 1)[:keep]
    positives = np.concatenate(positives).astype(np.float64)
    smallest = np.sort(smallest).astype(np.float64)
    results = {}
    for f in fmr_values:
        h = (num_neg - 1) * f  # np.quantile's 'linear' method on the full sorted negatives
        lo = int(math.floor(h))
        hi = min(lo + 1, num_neg - 1)
        low = smallest[lo]
        threshold = low + (h - lo) * (smallest[hi] - low) if hi < len(smallest) and hi != lo else low
        results[f] = float(np.mean(positives >= threshold))
    return results


def accepted_at_thresholds(distances, correct):
    """At each distinct distance t (ascending): how many items have distance <= t, and how many
    of those are ``correct``. Returns (thresholds, accepted, correct accepted), int counts."""
    order = np.argsort(distances, kind="stable")
    d = np.asarray(distances)[order]
    thresholds = np.unique(d)
    accepted = np.searchsorted(d, thresholds, side="right")
    return thresholds, accepted, np.concatenate([[0], np.cumsum(np.asarray(correct)[order])])[accepted]


def threshold_curve(embeddings, labels, ref_embeddings=None, ref_labels=None, distance="euclidean",
                    backend="auto", chunk_size=None):
    """Precision / recall / F1 of nearest-neighbour matches per threshold (module docstring).

    Returns a dict of equal-length arrays: ``threshold`` (distinct match scores, strictest
    first: ascending distances, descending similarities), ``precision``, ``recall``, ``f1``,
    ``tp``, ``fp``, ``fn``, ``tn`` (counts of queries).
    """
    queries, query_labels, refs, ref_labels, exclude_self = _prepare(
        embeddings, labels, ref_embeddings, ref_labels, distance)
    if len(refs) - int(exclude_self) < 1:
        raise ValueError("threshold_curve needs at least one reference besides each query")
    query_codes, ref_codes = _codes(query_labels, ref_labels)
    scores, correct = [], []
    for start, s, indices in iter_knn(queries, refs, 1, exclude_self, distance, resolve_backend(backend), chunk_size):
        scores.append(s[:, 0])
        correct.append(ref_codes[indices[:, 0]] == query_codes[start : start + len(indices)])
    scores, correct = np.concatenate(scores).astype(np.float64), np.concatenate(correct)
    d = scores if distance == "euclidean" else -scores  # smaller is closer
    thresholds, accepted, tp = accepted_at_thresholds(d, correct)
    fp = accepted - tp
    fn = int(correct.sum()) - tp
    tn = len(d) - accepted - fn
    div = lambda a, b: np.divide(a, b, out=np.zeros(len(a)), where=b > 0)  # noqa: E731
    precision, recall = div(tp, tp + fp), div(tp, tp + fn)
    f1 = div(2 * precision * recall, precision + recall)
    return {"threshold": thresholds if distance == "euclidean" else -thresholds, "precision": precision,
            "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _prepare(embeddings, labels, ref_embeddings, ref_labels, distance):
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError("give both ref_embeddings and ref_labels, or neither")
    queries = prepare_embeddings(embeddings, distance, "embeddings")
    query_labels = to_numpy(labels, "labels").reshape(-1)
    if len(query_labels) != len(queries):
        raise ValueError(f"labels has {len(query_labels)} entries but the embeddings have {len(queries)} rows")
    if ref_embeddings is None:
        return queries, query_labels, queries, query_labels, True
    refs = prepare_embeddings(ref_embeddings, distance, "ref_embeddings")
    ref_labels = to_numpy(ref_labels, "ref_labels").reshape(-1)
    if len(ref_labels) != len(refs):
        raise ValueError(f"ref_labels has {len(ref_labels)} entries but ref_embeddings have {len(refs)} rows")
    return queries, query_labels, refs, ref_labels, False
