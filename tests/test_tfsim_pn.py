"""The PN loss against TensorFlow Similarity 0.17 ``PNLoss``, recorded once by
``tests/fixtures/pml/record_tfsim_pn.py`` (TF 2.15, float32) on the batches of ``pml_losses2.npz``
without references: balanced P x K, ragged labels with singletons, one class, all distinct.

Both sides compute in float32: rtol 1e-5 on the values, (1e-5, 1e-6) on the gradients.
Degenerate anchors: TFSim's masked max / min give an anchor without a positive (a singleton,
every anchor of the all-distinct batch) or without a negative (every anchor of the one-class
batch) a bogus pair and a non-zero term (never NaN); dmltf gives such an anchor 0 and no gradient,
still counting it in the mean. So dmltf equals TFSim's ``PNLoss`` on the balanced batch and
TFSim's loss with those terms zeroed (``masked_*``, recorded from TFSim's own ``pn_loss``
terms) on every batch: 0 with a zero gradient on the one-class and all-distinct batches, where
TFSim's own value is non-zero (the all-distinct batch under the semi-hard, margin-1 case aside).
"""

import keras
import numpy as np
import pytest

from dmltf import losses
from recorded_losses import Recording, value_and_grads

pytestmark = pytest.mark.backend_neutral

INPUTS = Recording("pml", "pml_losses2.npz")
TFSIM = Recording("pml", "tfsim_pn.npz")
KINDS = ("balanced", "ragged", "one_class", "distinct")

# fixture case -> dmltf kwargs (TFSim's "sql2" is squared_euclidean; its margin=m is soft=False, margin=m)
CASES = {
    "pn": {},
    "pn_euclidean_easy_hard_m05": {"distance": "euclidean", "positive_mining": "easy", "negative_mining": "hard",
                                   "margin": 0.5, "soft": False},
    "pn_sql2_hard_easy": {"distance": "squared_euclidean", "positive_mining": "hard", "negative_mining": "easy"},
    "pn_sql2_semi_hard_m1": {"distance": "squared_euclidean", "margin": 1.0, "soft": False},
}


def test_fixture_was_recorded_from_tfsim_0_17():
    assert str(TFSIM["tfsim_version"]) == "0.17.1" and str(TFSIM["tf_version"]).startswith("2.15")
    assert {key.split("__")[0] for key in TFSIM.files if "__" in key} == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_values_and_gradients_match_tfsim(case):
    for kind in KINDS:
        labels, x, _, _ = INPUTS.batch(kind)
        want = lambda key: TFSIM[f"{case}__{kind}__{key}"]  # noqa: E731
        value, grad, _, _ = value_and_grads(losses.get("pn", **CASES[case]), labels, x)
        assert np.isfinite(want("value")) and np.all(np.isfinite(want("grad_x"))), kind
        # the masked value is TFSim's mean with the degenerate anchors' terms set to 0
        valid = want("valid") > 0
        assert float(want("masked_value")) == pytest.approx(np.sum(want("terms")[valid]) / len(labels), rel=1e-6)
        np.testing.assert_allclose(value, want("masked_value"), rtol=1e-5, atol=1e-7, err_msg=kind)
        np.testing.assert_allclose(grad, want("masked_grad_x"), rtol=1e-5, atol=1e-6, err_msg=kind)
        if valid.all():  # every anchor has a positive and a negative: TFSim's PNLoss itself
            np.testing.assert_allclose(value, want("value"), rtol=1e-5, atol=1e-7, err_msg=kind)
            np.testing.assert_allclose(grad, want("grad_x"), rtol=1e-5, atol=1e-6, err_msg=kind)
        if not valid.any():  # one class / all distinct: dmltf's 0 where TFSim has bogus terms
            assert value == 0.0 and np.all(grad == 0.0), kind
    assert TFSIM[f"{case}__one_class__value"] > 0  # TFSim's spurious terms


def test_singletons_are_where_tfsim_differs():
    """On the ragged batch TFSim's own loss has the singletons' spurious terms (dmltf's has not)."""
    terms, valid = TFSIM["pn__ragged__terms"], TFSIM["pn__ragged__valid"] > 0
    assert not valid.all() and np.all(terms[~valid] > 0)
    assert float(TFSIM["pn__ragged__value"]) == pytest.approx(np.mean(terms), rel=1e-6)


def test_semi_hard_falls_back_on_the_farthest_negative():
    """No negative is farther than the anchor's farthest positive: the farthest negative is used."""
    x = np.array([[0.0], [2.0], [1.0]], "float32")  # anchor 0: positive at 2, its only negative at 1
    got = float(losses.get("pn", distance="euclidean", margin=0.0, soft=False, reduction="sum")(np.array([0, 0, 1]), x))
    # anchor 0: 2 - min(1, 1) = 1; anchor 1: 2 - min(1, 1) = 1; anchor 2: no positive
    assert got == pytest.approx(2.0)


def test_config_round_trip_and_validation():
    loss = losses.get("pn", distance="euclidean", positive_mining="easy", negative_mining="hard", margin=0.3,
                      soft=False)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is type(loss) and again.get_config() == loss.get_config()
    assert {k: losses.get("pn").get_config()[k] for k in ("margin", "soft")} == {"margin": 0.0, "soft": True}
    with pytest.raises(ValueError, match="positive_mining"):
        losses.get("pn", positive_mining="semi-hard")
    with pytest.raises(ValueError, match="negative_mining"):
        losses.get("pn", negative_mining="medium")
