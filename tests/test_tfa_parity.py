"""tensorflow-addons 0.23's metric-learning losses against dmltf, recorded once by
``tests/fixtures/tfa/record_tfa_losses.py`` (TF 2.15) on the batches of ``pml_losses2.npz``
without references: balanced P x K, ragged labels with singletons, one class, all distinct.

TFA's triplet, lifted and distance functions were recorded in float32 (they refuse float64),
its contrastive and npairs losses in float64; dmltf computes in float32 either way: rtol 1e-5 on
the values, (1e-5, 1e-6) on the gradients with respect to the embeddings.

``CASES`` is the dmltf call that gives each TFA loss's numbers (``same numbers`` on the batches
of ``SAME_KINDS``). Where the two differ, dmltf is checked against TFA's own numbers as follows:

* ``TripletHardLoss(soft=True)`` is ``log1p(exp(d_ap - d_an))`` and ignores its margin; dmltf's
  ``soft=True`` keeps the margin inside the softplus (PML's ``smooth_loss``): TFA's numbers are
  ``margin=0.0, soft=True``.
* ``TripletHardLoss`` on an anchor without a positive or without a negative: TFA's masked max /
  min over an empty mask give it a term (no positive: the positive distance is the anchor's 0 to
  itself, so ``relu(margin - d_an)`` / ``log1p(exp(-d_an))``; no negative: the negative distance
  is the farthest positive's, so ``margin`` / ``log 2``, without gradient) and TFA averages over
  all B anchors. dmltf gives such an anchor weight 0 and averages over the others, so
  ``B * TFA = dmltf(reduction="sum") + those terms`` (a float64 numpy reference here).
* ``TripletSemiHardLoss``: an anchor without negatives takes 0 as its negative distance (one
  class: ``margin + mean d_ap``) and a batch without positive pairs is 0 / 0 = NaN; dmltf gives 0
  with a zero gradient. On the ragged batch every anchor with a positive has a negative: same.
* ``LiftedStructLoss``: NaN on a batch without positive pairs and where a positive pair has no
  negative (log 0 times a 0 mask); dmltf gives 0.
* ``ContrastiveLoss`` takes pair distances and averages over the pairs it is fed; dmltf takes the
  embeddings and sums over the ordered pairs (i, j), i != j: TFA on every pair i < j is dmltf's
  ``reduction="sum"`` divided by B (B - 1). (dmltf's default reduction averages the positive and
  the negative terms separately.)
* ``NpairsLoss``: dmltf's ``l2_reg`` defaults to tf.contrib's 0.002 regulariser, which TFA
  dropped: ``l2_reg=0.0``. ``NpairsMultilabelLoss`` with one label per sample is ``NpairsLoss``;
  multi-hot labels (TFA's ``|labels_i & labels_j|`` targets) have no dmltf equivalent.
* ``pairwise_distance``: dmltf's euclidean matrix keeps the Gram round-off on its diagonal,
  ``sqrt(eps |x|^2)`` (1e-3 here), where TFA sets the diagonal to 0; no dmltf loss uses a
  sample's distance to itself. ``angular_distance`` (``max(1 - cos, 0)``) is dmltf's cosine
  similarity s as ``1 - s``; dmltf's losses take the similarity itself (``distance="cosine"``),
  with the same numbers, since ``d_ap - d_an = s_an - s_ap``.
"""

import numpy as np
import pytest

from dmltf import distances, losses
from recorded_losses import Recording, central_differences, on_this_backend, value_and_grads

pytestmark = pytest.mark.backend_neutral

INPUTS = Recording("pml", "pml_losses2.npz")
TFA = Recording("tfa", "tfa_losses.npz")
KINDS = ("balanced", "ragged", "one_class", "distinct")
DMLTF_DISTANCE = {"l2": "euclidean", "sql2": "squared_euclidean", "angular": "cosine"}


def tfa_cases():
    """fixture case -> (dmltf loss name, kwargs giving TFA's numbers)."""
    cases = {}
    for metric, distance in DMLTF_DISTANCE.items():
        for suffix, margin in (("m1", 1.0), ("m02", 0.2)):
            cases[f"semihard_{metric}_{suffix}"] = ("triplet", {"margin": margin, "distance": distance,
                                                                "miner": "semi_hard"})
        cases[f"hard_{metric}_m1"] = ("triplet", {"margin": 1.0, "distance": distance, "miner": "batch_hard"})
        cases[f"hard_{metric}_soft"] = ("triplet", {"margin": 0.0, "soft": True, "distance": distance,
                                                    "miner": "batch_hard"})
    cases["hard_l2_m02"] = ("triplet", {"margin": 0.2, "miner": "batch_hard"})
    cases["lifted_m1"] = ("lifted_structure", {"margin": 1.0})
    cases["lifted_m05"] = ("lifted_structure", {"margin": 0.5})
    cases["npairs"] = ("npair", {"l2_reg": 0.0})
    cases["npairs_multilabel"] = ("npair", {"l2_reg": 0.0})
    for case, margin in (("contrastive_m1", 1.0), ("contrastive_m4", 4.0)):
        cases[case] = ("contrastive", {"pos_margin": 0.0, "neg_margin": margin, "squared": True, "reduction": "sum"})
    return cases


CASES = tfa_cases()
DISTANCE_FUNCTIONS = ("pairwise_distance", "pairwise_distance_squared", "angular_distance")
# the batches on which CASES give TFA's numbers, by case prefix (see the module docstring for the rest)
SAME_KINDS = {"semihard": ("balanced", "ragged"), "hard": ("balanced",), "lifted": ("balanced", "ragged"),
              "contrastive": KINDS, "npairs": ("balanced", "ragged", "one_class")}
same_kinds = lambda case: SAME_KINDS[case.split("_")[0]]  # noqa: E731
HARD_CASES = sorted(case for case in CASES if case.startswith("hard_"))
SEMI_HARD_CASES = sorted(case for case in CASES if case.startswith("semihard_"))


def parse(case):
    """(TFA metric, margin, soft) of a triplet fixture case name."""
    _, metric, suffix = case.split("_")
    return metric, {"m1": 1.0, "m02": 0.2, "soft": 1.0}[suffix], suffix == "soft"


def dmltf_value_and_grad(case, kind):
    labels, x, _, _ = INPUTS.batch(kind)
    name, kwargs = CASES[case]
    value, grad, _, _ = value_and_grads(losses.get(name, **kwargs), labels, x)
    if name == "contrastive":  # TFA's mean over the B (B - 1) / 2 pairs i < j; dmltf sums i != j
        pairs = len(labels) * (len(labels) - 1)
        value, grad = value / pairs, grad / pairs
    return value, grad


def assert_same(got, want, kind, grad_atol=1e-6):
    (value, grad), (want_value, want_grad) = got, want
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-7, err_msg=kind)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=grad_atol, err_msg=kind)


def tfa_recorded(case, kind):
    recorded = TFA.recorded(case, kind)
    return float(recorded["value"]), recorded["grad_x"]


def float32_inputs(kind):
    """labels, and x as TFA's float32 cases saw it (float64 again, for the numpy references)."""
    labels, x, _, _ = INPUTS.batch(kind)
    return labels, x.astype(np.float32).astype(np.float64)


def numpy_distances(x, metric):
    """TFA's "L2" (metric "l2"), "squared-L2" ("sql2") or "angular" (1 - cos) matrix, float64."""
    if metric == "angular":
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        return 1.0 - unit @ unit.T
    squared = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    return squared if metric == "sql2" else np.sqrt(squared)


def tfa_degenerate_hard_terms(labels, x, metric, margin, soft):
    """Sum of TripletHardLoss's terms for the anchors without a positive or a negative, as TFA's
    empty-mask max (the row's minimum, the anchor's own 0) and min (the row's maximum) give them."""
    d = numpy_distances(x, metric)
    same = labels[:, None] == labels[None, :]
    pos, neg = same & ~np.eye(len(labels), dtype=bool), ~same
    total = 0.0
    for a in range(len(labels)):
        if pos[a].any() and neg[a].any():
            continue
        hardest_positive = d[a][pos[a]].max() if pos[a].any() else 0.0
        hardest_negative = d[a][neg[a]].min() if neg[a].any() else d[a].max()
        gap = hardest_positive - hardest_negative
        total += np.log1p(np.exp(gap)) if soft else max(gap + margin, 0.0)
    return total


def tfa_one_class_semi_hard(labels, x, metric, margin):
    """TripletSemiHardLoss on a batch without negatives: every positive pair's negative distance is
    the row's minimum (the anchor's own 0), so ``mean over positive pairs of relu(margin + d_ap)``."""
    d = numpy_distances(x, metric)
    pos = ~np.eye(len(labels), dtype=bool)
    return np.mean(np.maximum(margin + d[pos], 0.0))


def test_fixture_was_recorded_from_tfa_0_23():
    assert str(TFA["tfa_version"]) == "0.23.0" and str(TFA["tf_version"]).startswith("2.15")
    assert {key.split("__")[0] for key in TFA.files if "__" in key} == set(CASES) | set(DISTANCE_FUNCTIONS)
    assert {case for case in CASES if str(TFA[f"{case}__dtype"]) == "float64"} == {
        "contrastive_m1", "contrastive_m4", "npairs", "npairs_multilabel"}
    # npairs has no pair to build its similarity matrix from on the all-distinct batch
    assert not TFA.recorded("npairs", "distinct") and not TFA.recorded("npairs_multilabel", "distinct")


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_numbers_as_tfa(case):
    for kind in on_this_backend(same_kinds(case)):
        assert np.isfinite(tfa_recorded(case, kind)[0]), kind
        assert_same(dmltf_value_and_grad(case, kind), tfa_recorded(case, kind), kind)


@pytest.mark.parametrize("case", HARD_CASES)
def test_hard_triplet_differs_by_tfa_terms_of_anchors_without_pairs(case):
    """``B * TFA = dmltf(sum) + TFA's terms of the anchors without a positive or a negative``."""
    metric, margin, soft = parse(case)
    name, kwargs = CASES[case]
    for kind in on_this_backend(KINDS):
        labels, x64 = float32_inputs(kind)
        value, grad = tfa_recorded(case, kind)
        total, total_grad, _, _ = value_and_grads(losses.get(name, **{**kwargs, "reduction": "sum"}), labels, x64)
        degenerate = lambda x: tfa_degenerate_hard_terms(labels, x, metric, margin, soft)  # noqa: E731
        n = len(labels)
        np.testing.assert_allclose(n * value, total + degenerate(x64), rtol=1e-5, atol=1e-6, err_msg=kind)
        np.testing.assert_allclose(n * grad, total_grad + central_differences(degenerate, x64), rtol=1e-5, atol=1e-5,
                                   err_msg=kind)
    # TFA's one-class terms: margin (log 2 when soft) for every anchor, with no gradient
    assert tfa_recorded(case, "one_class")[0] == pytest.approx(np.log(2.0) if soft else margin, rel=1e-6)
    assert np.all(tfa_recorded(case, "one_class")[1] == 0.0)


@pytest.mark.parametrize("case", SEMI_HARD_CASES)
def test_semi_hard_differs_on_batches_without_negatives_or_positives(case):
    metric, margin, _ = parse(case)
    labels, x64 = float32_inputs("one_class")
    value, grad = tfa_recorded(case, "one_class")
    reference = lambda x: tfa_one_class_semi_hard(labels, x, metric, margin)  # noqa: E731
    np.testing.assert_allclose(value, reference(x64), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, central_differences(reference, x64), rtol=1e-5, atol=1e-6)
    assert np.isnan(tfa_recorded(case, "distinct")[0])  # 0 positive pairs: 0 / 0
    for kind in ("one_class", "distinct"):
        dmltf_value, dmltf_grad = dmltf_value_and_grad(case, kind)
        assert dmltf_value == 0.0 and np.all(dmltf_grad == 0.0), kind


@pytest.mark.parametrize("case", ["lifted_m1", "lifted_m05"])
def test_lifted_is_nan_in_tfa_and_zero_in_dmltf_without_usable_pairs(case):
    for kind in ("one_class", "distinct"):
        value, grad = tfa_recorded(case, kind)
        assert np.isnan(value) and np.all(np.isnan(grad)), kind
        dmltf_value, dmltf_grad = dmltf_value_and_grad(case, kind)
        assert dmltf_value == 0.0 and np.all(dmltf_grad == 0.0), kind


def test_npair_is_zero_without_pairs():
    """TFA's npairs needs a similarity matrix of pairs; on the all-distinct batch there is none."""
    value, grad = dmltf_value_and_grad("npairs", "distinct")
    assert value == 0.0 and np.all(grad == 0.0)


@pytest.mark.parametrize("function", DISTANCE_FUNCTIONS)
def test_distance_functions(function):
    """TFA's metric_learning functions: dmltf's matrices off the diagonal, and the diagonal apart."""
    distance, as_tfa = {"pairwise_distance": ("euclidean", lambda m: m),
                        "pairwise_distance_squared": ("squared_euclidean", lambda m: m),
                        "angular_distance": ("cosine", lambda m: 1.0 - m)}[function]
    for kind in on_this_backend(KINDS):
        _, x, _, _ = INPUTS.batch(kind)
        x32 = x.astype(np.float32)
        got = as_tfa(np.asarray(distances.get(distance).pairwise(x32, x32), np.float64))
        want = TFA[f"{function}__{kind}__value"]
        off = ~np.eye(len(x), dtype=bool)
        np.testing.assert_allclose(got[off], want[off], rtol=1e-5, atol=1e-6, err_msg=kind)
        # the diagonal: round-off of the Gram form, |x|^2 eps (its square root for the euclidean)
        round_off = 4 * np.finfo(np.float32).eps * max(np.max(np.sum(x32.astype(np.float64) ** 2, axis=1)), 1.0)
        bound = np.sqrt(round_off) if distance == "euclidean" else round_off
        assert np.all(np.abs(np.diag(got)) <= bound) and np.all(np.abs(np.diag(want)) <= round_off), kind
        if function != "angular_distance":
            assert np.all(np.diag(want) == 0.0), kind  # TFA zeros the diagonal; angular clips at 0
