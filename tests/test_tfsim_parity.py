"""TensorFlow Similarity 0.17's ``TripletLoss``, ``MultiSimilarityLoss``, ``CircleLoss``,
``SimCLRLoss`` and ``VicReg`` against dmltf, recorded once by
``tests/fixtures/tfsim/record_tfsim_more.py`` (TF 2.15, float32) on the batches of
``pml_losses2.npz`` without references (balanced P x K, ragged labels with singletons, one class,
all distinct) and, for the two-view losses, on its ``views`` input. (``PNLoss``:
tests/test_tfsim_pn.py; ``SoftNearestNeighborLoss`` and ``Barlow``: tests/test_pml_losses2.py.
Not compared: ``MultiNegativesRankLoss`` and ``SimSiamLoss``, which dmltf does not have, and
``XBM``.)

Both sides compute in float32: rtol 1e-5 on the values, (1e-5, 1e-6) on the gradients.
TFSim's ``"cosine"`` is the distance 1 - x . y on unit vectors (the recorder normalises inside the
tape); dmltf's ``distance="cosine"`` is the similarity of the normalised inputs, which gives the
same losses (``d_ap - d_an = s_an - s_ap``).

* ``TripletLoss``: one triplet per anchor, TFSim's ``positive_mining_strategy`` /
  ``negative_mining_strategy`` are dmltf's ``batch_easy_hard`` miner's ``pos_strategy`` /
  ``neg_strategy`` (hard / hard is ``batch_hard``), TFSim's ``margin=None`` is ``soft=True,
  margin=0.0`` and ``margin=m`` is ``margin=m``. TFSim averages over every anchor and gives an
  anchor without a positive or a negative a bogus pair (see tests/test_tfsim_pn.py); its
  semi-hard mining falls back on the farthest negative when no negative is farther than the
  anchor's farthest positive. dmltf gives such anchors weight 0 and averages over the others:
  dmltf equals TFSim's terms of the valid anchors averaged over them (``masked_*``) on every
  batch, TFSim's own loss where every anchor is valid, and the fallback terms are checked
  against a numpy reference of TFSim's rule.
* ``MultiSimilarityLoss`` on TFSim's cosine distance: ``alpha``, ``beta`` as given, dmltf's
  ``base = 1 + lmda - center`` (TFSim shifts the distance by ``lmda - center``), the
  ``multi_similarity`` miner with TFSim's ``epsilon`` (dmltf's default beta is 50, TFSim's 40).
  Same numbers on every batch: both zero the anchors without a mined positive and negative and
  average over all anchors. TFSim's other distances have no dmltf equivalent (dmltf's loss is
  defined on similarities).
* ``CircleLoss``: no dmltf arguments reproduce it. TFSim's term is
  ``log(1 + sum_p e^{l_p}) + log(1 + sum_n e^{l_n})``, the paper's (dmltf's) is
  ``log(1 + sum_p e^{l_p} * sum_n e^{l_n})``; TFSim differentiates through the weights
  ``a_p = [1 + m - s_p]_+``, ``a_n = [s_n + m]_+`` (the paper and dmltf treat them as constants);
  TFSim averages over all anchors, dmltf over the anchors with a positive and a negative. Both
  are checked against a numpy reference of their formula on the same logits.
* ``SimCLRLoss(temperature=t)(za, zb)`` sums each row's two directions, ``loss_a + loss_b``, and
  averages over the B rows: twice dmltf's ``SelfSupervisedLoss`` wrapping ``ntxent`` with
  ``temperature=t``, which averages over the 2B anchors (same numbers after the factor 2; both
  normalise the views).
* ``VicReg``: its variance term takes the biased variance over the batch (``reduce_variance``,
  divided by B); the paper's, PML's and dmltf's the unbiased one (B - 1). With that the formulas
  agree (``lambda_, mu, nu, std_const`` are dmltf's ``invariance_lambda, variance_mu,
  covariance_v, eps``); both are checked against a numpy reference with either variance. TFSim's
  ``VicReg`` returns one value per row (reduction NONE); its mean, what ``fit`` minimises, is
  compared.
"""

import numpy as np
import pytest

from dmltf import losses, miners
from dmltf.losses.self_supervised import SelfSupervisedLoss
from dmltf.losses.vicreg import VICRegLoss
from recorded_losses import Recording, on_this_backend, value_and_grads
from test_tfa_parity import numpy_distances

pytestmark = pytest.mark.backend_neutral

INPUTS = Recording("pml", "pml_losses2.npz")
TFSIM = Recording("tfsim", "tfsim_more.npz")
KINDS = ("balanced", "ragged", "one_class", "distinct")


def easy_hard(pos_strategy, neg_strategy):
    return {"miner": "batch_easy_hard", "pos_strategy": pos_strategy, "neg_strategy": neg_strategy}


# fixture case -> kwargs of dmltf's "triplet" (a "miner" dict is built with miners.get)
TRIPLET_CASES = {
    "triplet": {"distance": "cosine", "margin": 0.0, "soft": True, "miner": easy_hard("hard", "semihard")},
    "triplet_cosine_hard_hard": {"distance": "cosine", "margin": 0.0, "soft": True, "miner": "batch_hard"},
    "triplet_l2_hard_semi_hard_m1": {"distance": "euclidean", "margin": 1.0, "miner": easy_hard("hard", "semihard")},
    "triplet_l2_hard_hard_m1": {"distance": "euclidean", "margin": 1.0, "miner": "batch_hard"},
    "triplet_sql2_easy_hard_m05": {"distance": "squared_euclidean", "margin": 0.5, "miner": easy_hard("easy", "hard")},
    "triplet_l2_easy_easy_m05": {"distance": "euclidean", "margin": 0.5, "miner": easy_hard("easy", "easy")},
}
# fixture case -> kwargs of dmltf's "multi_similarity"; TFSim's (lmda, center) = (0.5, 1.0) and
# (0.6, 1.0): base 0.5 and 0.6
MULTI_SIMILARITY_CASES = {
    "multi_similarity": {"alpha": 2.0, "beta": 40.0, "base": 0.5, "miner": {"miner": "multi_similarity",
                                                                            "epsilon": 0.1}},
    "multi_similarity_params": {"alpha": 1.0, "beta": 20.0, "base": 0.6, "miner": {"miner": "multi_similarity",
                                                                                   "epsilon": 0.3}},
}
# fixture case -> (TFSim margin, gamma); dmltf's m, gamma are the same numbers
CIRCLE_CASES = {"circle": (0.4, 80.0), "circle_g32_m025": (0.25, 32.0)}
# two-view cases -> SimCLR temperature / (TFSim VicReg kwargs, dmltf VICRegLoss kwargs)
SIMCLR_CASES = {"simclr": 0.05, "simclr_t05": 0.5}
VICREG_CASES = {
    "vicreg": ({"lambda_": 25.0, "mu": 25.0, "nu": 1.0, "std_const": 1e-4}, {}),
    "vicreg_weights": ({"lambda_": 5.0, "mu": 10.0, "nu": 2.0, "std_const": 1e-3},
                       {"invariance_lambda": 5.0, "variance_mu": 10.0, "covariance_v": 2.0, "eps": 1e-3}),
}
SEMI_HARD = ("triplet", "triplet_l2_hard_semi_hard_m1")
TFSIM_METRIC = {"cosine": "angular", "euclidean": "l2", "squared_euclidean": "sql2"}  # numpy_distances' names


def build(name, kwargs):
    miner = kwargs.get("miner")
    if isinstance(miner, dict):
        miner_kwargs = {k: v for k, v in miner.items() if k != "miner"}
        kwargs = {**kwargs, "miner": miners.get(miner["miner"], **miner_kwargs)}
    return losses.get(name, **kwargs)


def dmltf_value_and_grad(name, kwargs, kind):
    labels, x, _, _ = INPUTS.batch(kind)
    value, grad, _, _ = value_and_grads(build(name, kwargs), labels, x)
    return value, grad


def assert_same(got, value, grad, kind):
    np.testing.assert_allclose(got[0], value, rtol=1e-5, atol=1e-7, err_msg=kind)
    np.testing.assert_allclose(got[1], grad, rtol=1e-5, atol=1e-6, err_msg=kind)


def recorded(case, kind):
    return TFSIM.recorded(case, kind)


def tfsim_distances(x, distance):
    """TFSim's matrix for dmltf's ``distance`` in float64, from x as TFSim saw it (rounded to
    float32): TFSim's "cosine" is 1 - cos (TFA's "angular"), "l2" and "sql2" are TFA's."""
    return numpy_distances(x.astype(np.float32).astype(np.float64), TFSIM_METRIC[distance])


def masks(labels):
    same = labels[:, None] == labels[None, :]
    return same & ~np.eye(len(labels), dtype=bool), ~same


def test_fixture_was_recorded_from_tfsim_0_17():
    assert str(TFSIM["tfsim_version"]) == "0.17.1" and str(TFSIM["tf_version"]).startswith("2.15")
    cases = set(TRIPLET_CASES) | set(MULTI_SIMILARITY_CASES) | set(CIRCLE_CASES) | set(SIMCLR_CASES) | set(
        VICREG_CASES)
    assert {key.split("__")[0] for key in TFSIM.files if "__" in key} == cases


@pytest.mark.parametrize("case", sorted(TRIPLET_CASES))
def test_triplet_matches_tfsim_on_the_valid_anchors(case):
    for kind in on_this_backend(KINDS):
        want = recorded(case, kind)
        valid = want["valid"] > 0
        got = dmltf_value_and_grad("triplet", TRIPLET_CASES[case], kind)
        assert float(want["masked_value"]) == pytest.approx(
            np.sum(want["terms"][valid]) / max(valid.sum(), 1), rel=1e-6, abs=1e-12)
        assert_same(got, want["masked_value"], want["masked_grad_x"], kind)
        assert float(want["value"]) == pytest.approx(np.mean(want["terms"]), rel=1e-6, abs=1e-12)  # Keras' mean
        if valid.all():
            assert_same(got, want["value"], want["grad_x"], kind)
        if not valid.any():
            assert got[0] == 0.0 and np.all(got[1] == 0.0), kind
    # where TFSim's own loss is dmltf's: every anchor valid (the semi-hard cases have fallbacks there)
    assert recorded(case, "balanced")["valid"].all() == (case not in SEMI_HARD)


@pytest.mark.parametrize("case", SEMI_HARD)
def test_tfsim_semi_hard_falls_back_on_the_farthest_negative(case):
    """An anchor whose negatives are all within its farthest positive: TFSim's term uses the
    farthest negative (dmltf's ``semihard`` strategy leaves the anchor out)."""
    kwargs = TRIPLET_CASES[case]
    fallbacks = 0
    for kind in ("balanced", "ragged"):  # numpy against the recording: no dmltf math
        labels, x, _, _ = INPUTS.batch(kind)
        d = tfsim_distances(x, kwargs["distance"])
        pos, neg = masks(labels)
        farthest_positive = np.where(pos, d, -np.inf).max(axis=1)
        farthest_negative = np.where(neg, d, -np.inf).max(axis=1)
        fallback = pos.any(axis=1) & neg.any(axis=1) & (farthest_negative <= farthest_positive)
        gap = farthest_positive - farthest_negative
        want = np.log1p(np.exp(gap)) if kwargs.get("soft") else np.maximum(gap + kwargs["margin"], 0.0)
        np.testing.assert_allclose(recorded(case, kind)["terms"][fallback], want[fallback], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(recorded(case, kind)["valid"] > 0, pos.any(axis=1) & neg.any(axis=1) & ~fallback)
        fallbacks += fallback.sum()
    assert fallbacks > 0


@pytest.mark.parametrize("case", sorted(MULTI_SIMILARITY_CASES))
def test_multi_similarity_same_numbers_as_tfsim(case):
    for kind in on_this_backend(KINDS):
        want = recorded(case, kind)
        assert_same(dmltf_value_and_grad("multi_similarity", MULTI_SIMILARITY_CASES[case], kind), want["value"],
                    want["grad_x"], kind)
    assert not recorded(case, "ragged")["valid"].all() and recorded(case, "ragged")["value"] > 0


def circle_sums(labels, x, margin, gamma):
    """log of sum_p e^{l_p} and of sum_n e^{l_n} per anchor (-inf where empty), TFSim's logits on
    its cosine distance d = 1 - s, which are the paper's on s."""
    d = tfsim_distances(x, "cosine")
    pos, neg = masks(labels)
    pos_logits = -gamma * np.maximum(margin + d, 0.0) * (margin - d)
    neg_logits = gamma * np.maximum(1.0 + margin - d, 0.0) * (1.0 - margin - d)
    log_sum = lambda logits, mask: np.logaddexp.reduce(np.where(mask, logits, -np.inf), axis=1)  # noqa: E731
    return log_sum(pos_logits, pos), log_sum(neg_logits, neg), pos.any(axis=1) & neg.any(axis=1)


@pytest.mark.parametrize("case", sorted(CIRCLE_CASES))
def test_circle_differs_from_tfsim_by_its_formula(case):
    margin, gamma = CIRCLE_CASES[case]
    for kind in on_this_backend(KINDS):
        labels, x, _, _ = INPUTS.batch(kind)
        log_p, log_n, valid = circle_sums(labels, x, margin, gamma)
        want = recorded(case, kind)
        np.testing.assert_array_equal(want["valid"] > 0, valid)
        tfsim_terms = np.where(valid, np.logaddexp(0.0, log_p) + np.logaddexp(0.0, log_n), 0.0)
        np.testing.assert_allclose(want["terms"], tfsim_terms, rtol=1e-5, atol=1e-5, err_msg=kind)
        assert float(want["value"]) == pytest.approx(np.mean(tfsim_terms), rel=1e-5, abs=1e-7)
        value, _ = dmltf_value_and_grad("circle", {"m": margin, "gamma": gamma}, kind)
        paper_terms = np.logaddexp(0.0, log_p + log_n)[valid]
        assert value == pytest.approx(np.mean(paper_terms) if valid.any() else 0.0, rel=1e-5, abs=1e-7), kind
        if valid.any():
            assert abs(value - float(want["value"])) > 1e-3, kind  # the formulas differ on every such batch


def views():
    return INPUTS["input__views__x"], INPUTS["input__views__view2"]


@pytest.mark.parametrize("case", sorted(SIMCLR_CASES))
def test_simclr_is_twice_self_supervised_ntxent(case):
    ntxent = {"class_name": "dmltf>ntxent", "config": {"temperature": SIMCLR_CASES[case]}}
    x, view2 = views()
    value, grad_x, grad_view2, _ = value_and_grads(SelfSupervisedLoss(ntxent), None, x, None, view2)
    want = recorded(case, "views")
    np.testing.assert_allclose(2 * value, want["value"], rtol=1e-5)
    np.testing.assert_allclose(2 * grad_x, want["grad_x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(2 * grad_view2, want["grad_refs"], rtol=1e-5, atol=1e-6)


def numpy_vicreg(za, zb, lambda_, mu, nu, std_const, ddof):
    """VICReg with the variance over the batch divided by B - ddof (covariances by B - 1)."""
    def variance(z):
        return np.mean(np.maximum(0.0, 1.0 - np.sqrt(np.var(z, axis=0, ddof=ddof) + std_const)))

    def covariance(z):
        off_diagonal = np.cov(z, rowvar=False) * (1.0 - np.eye(z.shape[1]))
        return np.sum(np.square(off_diagonal)) / z.shape[1]

    return (lambda_ * np.mean(np.square(za - zb)) + mu * (variance(za) + variance(zb)) / 2
            + nu * (covariance(za) + covariance(zb)))


@pytest.mark.parametrize("case", sorted(VICREG_CASES))
def test_vicreg_differs_from_tfsim_by_its_biased_variance(case):
    tfsim_kwargs, dmltf_kwargs = VICREG_CASES[case]
    za, zb = (z.astype(np.float32).astype(np.float64) for z in views())
    tfsim_value = float(recorded(case, "views")["value"])
    assert tfsim_value == pytest.approx(numpy_vicreg(za, zb, **tfsim_kwargs, ddof=0), rel=1e-5)
    value, _, _, _ = value_and_grads(VICRegLoss(**dmltf_kwargs), None, za, None, zb)
    assert value == pytest.approx(numpy_vicreg(za, zb, **tfsim_kwargs, ddof=1), rel=1e-5)
    assert abs(value - tfsim_value) > 0.1  # the variance terms differ on these 9 rows
