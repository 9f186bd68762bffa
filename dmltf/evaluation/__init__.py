"""Retrieval evaluation: exact kNN (faiss or chunked TF), recall@K, precision@1, R-precision,
MAP@R, NMI, AMI and pair-counting F1 (METHODS.md section 6); map@K, ndcg@K, mrr(@K) with micro or
per-class averaging; Revisiting-DML's map_c, map_c@K and map_lim; linear_accuracy, a linear probe
(:mod:`.linear_probe`); fnmr@fmr and a threshold precision / recall curve (:mod:`.verification`);
embedding diagnostics (:mod:`.diagnostics`).

Example:
    >>> import numpy as np
    >>> from dmltf import evaluation
    >>> x = np.random.default_rng(0).normal(size=(40, 8)).astype("float32")
    >>> y = np.arange(40) % 4
    >>> sorted(evaluation.evaluate(x, y, metrics=("recall@1", "f1")))
    ['f1', 'num_lone_queries', 'num_queries', 'recall@1']
"""
from dmltf.evaluation.search import knn
from dmltf.evaluation.metrics import (DEFAULT_METRICS, LINEAR_ACCURACY, LINEAR_PROBE_PROTOCOL, check_metrics, evaluate,
                                      metric_names)

__all__ = ["DEFAULT_METRICS", "LINEAR_ACCURACY", "LINEAR_PROBE_PROTOCOL", "check_metrics", "evaluate", "knn",
           "metric_names"]
