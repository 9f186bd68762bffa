"""Embedding-space diagnostics: intra- and inter-class distances and the singular-value spectrum.

Reference: Roth et al. 2020, "Revisiting Training Strategies and Generalization Performance in
Deep Metric Learning" (``metrics/dists.py``, ``metrics/rho_spectrum.py``). Computed on the host in
float64 from the embeddings as given (L2-normalised first for ``distance="cosine"``):

* ``dists@intra``: for each class with at least two members, the mean distance over its ordered
  pairs of distinct members; then the mean over those classes (class-averaged, as RDML).
* ``dists@inter``: the mean distance over ordered pairs of distinct class centres (the mean of
  each class's embeddings, L2-normalised for cosine, as RDML), over the classes present.
* ``dists@intra_over_inter``: their ratio (RDML clips the denominator at 1e-8, as here).
* ``rho_spectrum@K``: with s the singular values of the embedding matrix [N, D] (not centred,
  RDML's ``torch.svd`` branch), descending: K = 0 gives the normalised spectrum s / sum(s)
  (an array, from :func:`singular_value_spectrum`; not an ``evaluate`` metric); K > 0 drops the
  first K - 1 values and gives KL(uniform || s_norm); K < 0 drops the first |K| - 1 and gives
  KL(s_norm || uniform) (``scipy.stats.entropy`` order, natural log).

Distances: ``euclidean`` (as given), ``cosine`` (1 - cosine similarity, RDML's choice) or ``dot``
(the negated inner product: only its order is meaningful, so these diagnostics are offered for
euclidean and cosine only).
Deviations: RDML replaces the intra distance of a singleton class (NaN) by the largest class
value before averaging; here singleton classes are left out of the mean (they have no pair), and
``dists@intra`` is NaN without any class of two. RDML's numpy branch uses a truncated SVD of
D - 1 components; here the full spectrum (min(N, D) values) is used.

Example:
    >>> import numpy as np
    >>> from dmltf.evaluation import diagnostics
    >>> x = np.array([[0.0, 0.0], [0.0, 2.0], [4.0, 0.0], [4.0, 2.0]])
    >>> d = diagnostics.class_distances(x, [0, 0, 1, 1])
    >>> d["dists@intra"], d["dists@inter"], d["dists@intra_over_inter"]
    (2.0, 4.0, 0.5)
"""
import re

import numpy as np

from dmltf.evaluation.search import to_numpy

RHO_PATTERN = re.compile(r"rho_spectrum@(-?[1-9][0-9]*)")
DIST_NAMES = ("dists@intra", "dists@inter", "dists@intra_over_inter")
DISTANCES = ("euclidean", "cosine")


def is_diagnostic(name):
    return name in DIST_NAMES or bool(isinstance(name, str) and RHO_PATTERN.fullmatch(name))


def _prepare(embeddings, distance):
    if distance not in DISTANCES:
        raise ValueError(f"embedding diagnostics use euclidean or cosine distances, got {distance!r}")
    x = to_numpy(embeddings, "embeddings", np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [num_samples, dim], got shape {x.shape}")
    return _unit(x) if distance == "cosine" else x


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _pairwise(x, distance):
    if distance == "cosine":
        return 1.0 - x @ x.T
    sq = (x * x).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0))


def class_distances(embeddings, labels, distance="euclidean"):
    """{``dists@intra``, ``dists@inter``, ``dists@intra_over_inter``} (module docstring)."""
    x = _prepare(embeddings, distance)
    labels = to_numpy(labels, "labels").reshape(-1)
    if len(labels) != len(x):
        raise ValueError(f"labels has {len(labels)} entries but the embeddings have {len(x)} rows")
    classes = np.unique(labels)
    intra, centres = [], []
    for c in classes:
        members = x[labels == c]
        centres.append(members.mean(0))
        if len(members) >= 2:
            d = _pairwise(members, distance)
            intra.append((d.sum() - np.trace(d)) / (len(members) * (len(members) - 1)))
    centres = np.array(centres)
    if distance == "cosine":
        centres = _unit(centres)
    nan = float("nan")
    intra_value = float(np.mean(intra)) if intra else nan
    if len(centres) >= 2:
        d = _pairwise(centres, distance)
        inter_value = float((d.sum() - np.trace(d)) / (len(centres) * (len(centres) - 1)))
    else:
        inter_value = nan
    ratio = intra_value / max(inter_value, 1e-8) if not np.isnan(intra_value + inter_value) else nan
    return {"dists@intra": intra_value, "dists@inter": inter_value, "dists@intra_over_inter": ratio}


def singular_value_spectrum(embeddings, distance="euclidean"):
    """Singular values of the [N, D] embedding matrix (L2-normalised rows for cosine), descending."""
    return np.linalg.svd(_prepare(embeddings, distance), compute_uv=False)


def rho_spectrum(embeddings, mode, distance="euclidean"):
    """RDML's ``rho_spectrum@mode`` (module docstring): an array for mode 0, else a float."""
    s = singular_value_spectrum(embeddings, distance)
    if mode != 0:
        s = s[abs(mode) - 1 :]
    if not len(s) or s.sum() <= 0:
        return float("nan")
    p = s / s.sum()
    if mode == 0:
        return p
    u = np.full(len(s), 1.0 / len(s))
    kl = lambda a, b: float(np.sum(np.where(a > 0, a * np.log(a / np.where(b > 0, b, 1.0)), 0.0)))  # noqa: E731
    if mode > 0:
        return kl(u, p) if np.all(p > 0) else float("inf")
    return kl(p, u)


def evaluate_diagnostics(embeddings, labels, names, distance="euclidean"):
    """{name: value} for the ``dists@*`` and ``rho_spectrum@K`` (K != 0) names."""
    out = {}
    if any(n in DIST_NAMES for n in names):
        out.update(class_distances(embeddings, labels, distance))
    for name in names:
        m = RHO_PATTERN.fullmatch(name)
        if m:
            out[name] = rho_spectrum(embeddings, int(m.group(1)), distance)
    return {n: out[n] for n in names}
