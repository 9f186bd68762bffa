"""Retrieval metrics of one query from the labels of its ranked neighbours.

References: Musgrave, Belongie, Lim, "A Metric Learning Reality Check" (ECCV 2020) and
pytorch-metric-learning ``utils/accuracy_calculator.py`` for precision@1, R-precision and
MAP@R; the DML "R@K" of METHODS.md section 6 for recall@K.

Every function takes ``match`` [Q, k] bool (neighbour i has the query's label, nearest first,
the query itself excluded) and ``r`` [Q] int (R_q = number of other references with the
query's label, >= 1: lone queries are filtered out before) and returns one value per query:

* ``recall@K``    = 1[any(match[:K])]
* ``precision@1`` = match[0]
* ``r_precision`` = sum(match[:R_q]) / R_q
* ``map@r``       = (1 / R_q) sum_{i <= R_q} P@i rel(i), P@i = precision of the top i
* ``map@K``       = (1 / R_q) sum_{i <= K} P@i rel(i)   (TensorFlow Similarity ``MapAtK``: the
  denominator is R_q, the class's count among the references, also when K < R_q, so a perfect
  ranking scores min(K, R_q) / R_q; OML's ``map@k`` divides by min(K, R_q) instead)
* ``ndcg@K``      = DCG / IDCG with binary gains, DCG = sum_{i <= K} rel(i) / log2(i + 1) and
  IDCG the DCG of the same top-K hits moved to the front (TensorFlow Similarity ``BNDCG``,
  ``distance_threshold=inf``), 0 when no hit is in the top K. Note: this ideal ranking uses the
  hits found, not min(K, R_q) hits, so one hit at rank K scores 1 (TFSim's definition)
* ``mrr``         = 1 / (rank of the first relevant reference) over the whole ranking
  (pytorch-metric-learning ``mean_reciprocal_rank`` with ``k=None``); reads every reference
* ``mrr@K``       = the same, 0 when no relevant reference is in the top K
* ``map_c``       = (1 / (R_q + 1)) sum_{i <= R_q + 1} P@i rel(i): Revisiting-DML ``mAP_c``
  (``metrics/mAP_c.py``), whose cut-off and denominator are the class frequency *including*
  the query, R_q + 1; a perfect ranking scores R_q / (R_q + 1)
* ``map_c@K``     = (1 / (R_q + 1)) sum_{i <= K} P@i rel(i): the same denominator with a fixed
  cut-off, Revisiting-DML ``mAP_1000`` as ``map_c@1000``. It differs from ``map@K`` only in the
  denominator (R_q + 1 there, R_q here): map_c@K = map@K * R_q / (R_q + 1)
* ``map_lim``     = ``map_c@1023``: Revisiting-DML ``mAP_lim``, cut-off min(1023, n) (faiss GPU's
  k limit) where n counts the query too, so below 1,024 images it reads the whole ranking, as
  the cap on K does here

With ``ref_embeddings`` (no self-exclusion) the Revisiting variants keep the denominator R_q + 1
(R_q = the query's class count among the references): Revisiting-DML defines them only for
query set = reference set.

Exact at any K: the caller passes min(needs_k, available references) columns; a K beyond that
reads what exists (the ranking has no further entries), so ``recall@K``, ``map@K``, ``ndcg@K``
and ``mrr@K`` with K >= the number of references equal their values at that number. Ties
between equidistant references are ordered by the search (see :mod:`.search`).

Deviations from Revisiting-DML's ``mAP_c`` / ``mAP_1000`` / ``mAP_lim`` (each searches R + 1
neighbours with faiss and drops column 0 as the query): (1) the query is dropped by index (see
:mod:`.search`), which gives the same labels unless an exact duplicate of another class ties with
it; (2) where the search asks for more neighbours than exist (one class holding every image for
``mAP_c``; fewer than 1,001 images for ``mAP_1000``, fewer than 1,024 for ``mAP_lim``) faiss pads
with index -1 and the reference reads the last image's label there, counting spurious hits for
that label's queries; here a ranking ends at its last reference; (3) lone queries (a class of one)
are excluded, as from every metric here, where the reference averages them in with AP 0: its value
is this one times (non-lone queries / all queries).
"""
import re

import numpy as np

from dmltf.registry import Registry


class RetrievalMetric:
    """A per-query metric and the number of neighbours it reads, given the largest R_q."""

    def __init__(self, per_query, needs_k):
        self.per_query = per_query
        self.needs_k = needs_k


def _within_r(match, r):
    return np.arange(match.shape[1])[None, :] < r[:, None]


def recall_at(k):
    return RetrievalMetric(lambda match, r: match[:, :k].any(axis=1), lambda max_r: k)


def precision_at_1(match, r):
    return match[:, 0].astype("float64")


def r_precision(match, r):
    return (match & _within_r(match, r)).sum(axis=1) / r


def map_at_r(match, r):
    precision_at_i = np.cumsum(match, axis=1) / np.arange(1, match.shape[1] + 1)
    return (precision_at_i * (match & _within_r(match, r))).sum(axis=1) / r


def map_at(k):
    def per_query(match, r):
        top = match[:, :k]
        precision_at_i = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
        return (precision_at_i * top).sum(axis=1) / r

    return RetrievalMetric(per_query, lambda max_r: k)


def map_c_at(k):
    """map@K with the class frequency R_q + 1 as denominator (Revisiting-DML mAP_1000 at K = 1000)."""
    map_k = map_at(k).per_query

    def per_query(match, r):
        return map_k(match, r) * r / (r + 1)

    return RetrievalMetric(per_query, lambda max_r: k)


def map_c(match, r):
    """Cut-off and denominator R_q + 1, the class frequency with the query (Revisiting-DML mAP_c)."""
    top = match & _within_r(match, r + 1)
    precision_at_i = np.cumsum(top, axis=1) / np.arange(1, match.shape[1] + 1)
    return (precision_at_i * top).sum(axis=1) / (r + 1)


def ndcg_at(k):
    def per_query(match, r):
        top = match[:, :k]
        discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
        dcg = (top * discount).sum(axis=1)
        ideal = np.concatenate([[0.0], np.cumsum(discount)])[top.sum(axis=1)]  # the hits at the front
        return np.divide(dcg, ideal, out=np.zeros(len(top)), where=ideal > 0)

    return RetrievalMetric(per_query, lambda max_r: k)


def _reciprocal_rank(match):
    first = np.argmax(match, axis=1)
    return np.where(match.any(axis=1), 1.0 / (first + 1), 0.0)


def mrr_at(k):
    return RetrievalMetric(lambda match, r: _reciprocal_rank(match[:, :k]), lambda max_r: k)


ALL = np.iinfo(np.int64).max  # needs_k of a metric that reads the whole ranking (capped by the caller)

METRICS = Registry("retrieval metric")  # recall@K, map@K, ndcg@K and mrr@K are resolved by get()
METRICS.add("precision@1", RetrievalMetric(precision_at_1, lambda max_r: 1))
METRICS.add("r_precision", RetrievalMetric(r_precision, lambda max_r: max_r))
METRICS.add("map@r", RetrievalMetric(map_at_r, lambda max_r: max_r))
METRICS.add("mrr", RetrievalMetric(lambda match, r: _reciprocal_rank(match), lambda max_r: ALL))
METRICS.add("map_c", RetrievalMetric(map_c, lambda max_r: max_r + 1))
METRICS.add("map_lim", map_c_at(1023))
PARAMETRISED = {"recall": recall_at, "map": map_at, "map_c": map_c_at, "ndcg": ndcg_at, "mrr": mrr_at}  # <name>@K
PARAMETRISED_PATTERN = re.compile(r"(recall|map|map_c|ndcg|mrr)@([1-9][0-9]*)")  # K >= 1


def get(name):
    """The :class:`RetrievalMetric` called ``name``, or None if it is not a retrieval metric."""
    parametrised = PARAMETRISED_PATTERN.fullmatch(name)
    if parametrised:
        return PARAMETRISED[parametrised.group(1)](int(parametrised.group(2)))
    return METRICS.lookup(name) if name in METRICS else None
