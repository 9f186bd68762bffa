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

Deviations: none. Revisiting-DML's ``mAP_c`` (class-frequency cut-off) is not implemented.
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


METRICS = Registry("retrieval metric")  # recall@K, parametrised by K, is resolved by get()
METRICS.add("precision@1", RetrievalMetric(precision_at_1, lambda max_r: 1))
METRICS.add("r_precision", RetrievalMetric(r_precision, lambda max_r: max_r))
METRICS.add("map@r", RetrievalMetric(map_at_r, lambda max_r: max_r))
RECALL_PATTERN = re.compile(r"recall@([1-9][0-9]*)")


def get(name):
    """The :class:`RetrievalMetric` called ``name``, or None if it is not a retrieval metric."""
    recall = RECALL_PATTERN.fullmatch(name)
    if recall:
        return recall_at(int(recall.group(1)))
    return METRICS.lookup(name) if name in METRICS else None
