"""instance, centroid_triplet and the maximum_loss miner against values recorded once from
pytorch-metric-learning and against float64 numpy references written here.

``tests/fixtures/pml/record_pml_losses3.py`` (run with torch + PML, never by the suite) wrote
``pml_losses3.npz`` from PML 2.9 (``InstanceLoss``) and ``pml1_losses3.npz`` from PML 1.7.3, the
last version with ``CentroidTripletLoss`` and ``MaximumLossMiner``: values and embedding
gradients in float64 on the batches of ``pml_losses.npz`` (balanced, ragged with singletons, one
class, all distinct; PML takes no references, dmltf's meaning of them is checked against the
numpy references) and, for the centroid loss, two batches without
singletons (``five_classes`` 5 x 2, ``uneven`` 3 + 2 + 2). dmltf computes in float32: rtol 1e-5,
atol 1e-6 on the gradients.

Where dmltf deliberately differs the test states the reference it follows:
* instance: the default is the paper's "each sample its own instance" (PML given distinct labels
  sorted in batch order); PML's label-rank targets are ``label_rank_targets=True``.
* centroid_triplet: PML 1.7.3's numbers where its index arithmetic is exact (P <= 4 classes of
  equal size); PML raises on singletons, keeps only the last 3 other classes' centroids with 5
  classes and mis-slices uneven classes: there dmltf follows the formula of PML's docstring,
  checked against the numpy reference below (and PML's five-class number against that reference
  with 3 negatives, the documented reason).
* maximum_loss: PML draws its subsets from numpy's generator; the losses of PML's own subsets,
  the choice among them and the trainer step on the winner are PML's (the subsets injected).
"""
import keras
import numpy as np
import pytest

from dmltf import losses, miners
from dmltf.miners import Pairs
from recorded_losses import (Recording, at_least_on_this_backend, central_differences, compiled, on_this_backend,
                             value_and_grads, value_of)

pytestmark = pytest.mark.backend_neutral

PML29 = Recording("pml", "pml_losses3.npz")
PML17 = Recording("pml", "pml1_losses3.npz")
KINDS = ("balanced", "ragged", "one_class", "distinct")
CENTROID_KINDS = KINDS + ("five_classes", "uneven")
tensorflow_only = pytest.mark.tensorflow_only


def cases_here(cases, off_tensorflow):
    """The cases, those not in ``off_tensorflow`` TensorFlow-only (their operations are the others')."""
    return [c if c in off_tensorflow else pytest.param(c, marks=tensorflow_only) for c in sorted(cases)]


def assert_matches(value, grad_x, want, msg):
    np.testing.assert_allclose(value, want["value"], rtol=1e-5, atol=1e-7, err_msg=msg)
    np.testing.assert_allclose(grad_x, want["grad_x"], rtol=1e-5, atol=1e-6, err_msg=msg + " (grad x)")


# --------------------------------------------------------------------------------- instance
INSTANCE = {  # fixture case -> dmltf kwargs
    "instance": {},
    "instance_gamma8": {"gamma": 8.0},
    "instance_label_rank": {"label_rank_targets": True},
    "instance_label_rank_gamma8": {"gamma": 8.0, "label_rank_targets": True},
}


def instance_reference(labels, x, gamma=64.0, label_rank_targets=False, ref_labels=None, refs=None):
    """Zheng et al.'s in-batch instance loss (float64): cross-entropy of gamma cos(x_i, x_j) over
    the batch with the sample's own column as target, or, PML 2.9's quirk, its label's rank; with
    references, over them, the references of the query's label as targets (queries without one
    left out)."""
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    logits = gamma * unit(x) @ unit(x if refs is None else refs).T
    if refs is not None:
        target = labels[:, None] == ref_labels[None, :]
    elif label_rank_targets:
        target = np.eye(len(x), dtype=bool)[np.unique(labels, return_inverse=True)[1]]
    else:
        target = np.eye(len(x), dtype=bool)
    terms = [np.log(np.exp(row).sum()) - np.log(np.exp(row[t]).sum()) for row, t in zip(logits, target) if t.any()]
    return float(np.mean(terms)) if terms else 0.0


def test_fixtures_were_recorded_from_pml_2_9_and_1_7_3():
    assert str(PML29["pml_version"]) == "2.9.0" and str(PML17["pml_version"]) == "1.7.3"
    assert {k.split("__")[0] for k in PML29.files if "__" in k} - {"input"} == set(INSTANCE)
    assert {k.split("__")[0] for k in PML17.files if "__" in k} - {"input"} == {*CENTROID, *MAXIMUM_LOSS}


@pytest.mark.parametrize("case", sorted(INSTANCE))
def test_instance_matches_pml_and_the_reference(case):
    checked = 0
    for kind in on_this_backend(KINDS):
        labels, x, _, _ = PML29.batch(kind)
        want = PML29.recorded(case, kind)
        value, grad_x, _, _ = value_and_grads(losses.get("instance", **INSTANCE[case]), labels, x)
        assert_matches(value, grad_x, want, f"{case} on the {kind} batch")
        assert float(want["value"]) == pytest.approx(instance_reference(labels, x, **INSTANCE[case]), rel=1e-9)
        checked += 1
    assert checked >= at_least_on_this_backend(4)


def test_instance_default_is_the_label_rank_only_for_distinct_sorted_labels():
    """The two modes agree exactly where PML's quirk means "each sample its own instance"."""
    for kind in ("distinct", "balanced"):
        same = np.allclose(PML29.recorded("instance_gamma8", kind)["value"],
                           PML29.recorded("instance_label_rank_gamma8", kind)["value"])
        assert same == (kind == "distinct"), kind


@pytest.mark.parametrize("label_rank_targets", [pytest.param(False, marks=tensorflow_only), True])
def test_instance_zero_weights_drop_the_samples(label_rank_targets):
    labels, x, _, _ = PML29.batch("ragged")
    keep = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0], "float32")
    loss = losses.get("instance", gamma=8.0, label_rank_targets=label_rank_targets)
    weighted = value_of(lambda x, w: loss(labels, x, sample_weight=w), [x, keep])
    kept = keep == 1
    want = instance_reference(labels[kept], x[kept], 8.0, label_rank_targets)
    assert weighted == pytest.approx(want, rel=1e-5)
    value, grad_x, _, _ = value_and_grads(loss, labels, x, sample_weight=keep)
    assert np.all(grad_x[~kept] == 0.0)
    assert value_of(lambda x, w: loss(labels, x, sample_weight=w), [x, np.zeros(9)]) == 0.0


# ---------------------------------------------------------------------------- centroid triplet
CENTROID = {  # fixture case -> dmltf kwargs
    "centroid_triplet": {},
    "centroid_triplet_m05": {"margin": 0.5},
    "centroid_triplet_soft": {"margin": 0.5, "soft": True},
    "centroid_triplet_cosine": {"margin": 0.5, "distance": "cosine"},
}
PML_EXACT = ("balanced", "one_class")  # P <= 4 classes of equal size: PML's indexing is right


def centroid_reference(labels, x, margin=0.05, soft=False, distance="euclidean", negatives_kept=None,
                       ref_labels=None, refs=None):
    """The formula of PML 1.7.3's docstring (float64): every query with another sample of its
    class against the mean of those others (positive) and every other class's mean (negatives,
    in order of first appearance; ``negatives_kept``: only the last that many, PML's chunk),
    mean over the non-zero triplets; with references, their classes' means."""
    if distance == "cosine":
        unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
        closeness = lambda a, b: float(unit(a) @ unit(b))  # noqa: E731
    else:
        closeness = lambda a, b: -float(np.linalg.norm(a - b))  # noqa: E731
    same_source = refs is None
    ref_labels, refs = (labels, x) if same_source else (ref_labels, refs)
    classes = list(dict.fromkeys(ref_labels.tolist()))
    terms = []
    for i, k in enumerate(labels):
        own = [j for j in range(len(ref_labels)) if ref_labels[j] == k and not (same_source and j == i)]
        if not own:
            continue
        pos = closeness(x[i], refs[own].mean(axis=0))
        negatives = [c for c in classes if c != k]
        negatives = negatives[-negatives_kept:] if negatives_kept else negatives
        for c in negatives:
            violation = closeness(x[i], refs[ref_labels == c].mean(axis=0)) - pos + margin
            terms.append(np.log1p(np.exp(violation)) if soft else max(violation, 0.0))
    nonzero = [t for t in terms if t > 0]
    return float(np.mean(nonzero)) if nonzero else 0.0


@pytest.mark.parametrize("case", cases_here(CENTROID, ("centroid_triplet_soft", "centroid_triplet_cosine")))
def test_centroid_triplet_matches_pml_where_pml_is_exact_and_the_reference_everywhere(case):
    kwargs = CENTROID[case]
    loss = losses.get("centroid_triplet", **kwargs)
    for kind in on_this_backend(CENTROID_KINDS):
        labels, x, _, _ = PML17.batch(kind)
        want = PML17.recorded(case, kind)
        value, grad_x, _, _ = value_and_grads(loss, labels, x)
        msg = f"{case} on the {kind} batch"
        reference = centroid_reference(labels, x, **kwargs)
        assert value == pytest.approx(reference, rel=1e-5, abs=1e-7), msg
        if kind in PML_EXACT:
            assert_matches(value, grad_x, want, msg)
            continue
        grad_want = central_differences(lambda v: centroid_reference(labels, v, **kwargs), x)
        np.testing.assert_allclose(grad_x, grad_want, rtol=1e-4, atol=1e-5, err_msg=msg + " (grad x)")
        if kind in ("ragged", "distinct"):  # a class of one sample
            assert "raises" in want, msg
        elif kind == "five_classes":  # PML's torch.chunk keeps the last 3 of the 4 other centroids
            assert float(want["value"]) == pytest.approx(centroid_reference(labels, x, negatives_kept=3, **kwargs))
            assert float(want["value"]) != pytest.approx(reference, rel=1e-3), msg
        else:  # uneven: PML's triplets are not (query, own centroid, other centroid)
            assert float(want["value"]) != pytest.approx(reference, rel=1e-3), msg


def test_centroid_triplet_edge_cases():
    loss = losses.get("centroid_triplet", margin=0.5)
    labels, x, _, _ = PML17.batch("ragged")
    degenerate = (np.zeros(4, int), np.arange(4), np.array([0]))  # no triplet: 0 and a zero gradient
    for batch_labels in degenerate if keras.backend.backend() == "tensorflow" else degenerate[:1]:
        value, grad_x, _, _ = value_and_grads(loss, batch_labels, x[: len(batch_labels)])
        assert value == 0.0 and np.all(grad_x == 0.0)
    keep = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1], "float32")
    weighted = value_of(lambda x, w: loss(labels, x, sample_weight=w), [x, keep])
    assert weighted == pytest.approx(centroid_reference(labels[keep == 1], x[keep == 1], margin=0.5), rel=1e-5)
    _, grad_x, _, _ = value_and_grads(loss, labels, x, sample_weight=keep)
    assert np.all(grad_x[keep == 0] == 0.0)


REFS = Recording("pml", "pml_losses.npz").batch("refs")  # queries of labels 0-3, references of 0-6
WITH_REFERENCES = {
    "instance": ({"gamma": 8.0}, instance_reference),
    "centroid_triplet": ({"margin": 0.5, "soft": True}, centroid_reference),
}


@pytest.mark.parametrize("name", sorted(WITH_REFERENCES))
def test_with_references_against_the_reference(name):
    """PML refuses references; dmltf's meaning of them (the docstrings), on the numpy side too."""
    kwargs, reference = WITH_REFERENCES[name]
    labels, x, ref_labels, refs = REFS
    value, grad_x, grad_refs, _ = value_and_grads(losses.get(name, **kwargs), labels, x, ref_labels, refs)
    assert value == pytest.approx(reference(labels, x, **kwargs, ref_labels=ref_labels, refs=refs), rel=1e-5)
    want_x = central_differences(lambda v: reference(labels, v, **kwargs, ref_labels=ref_labels, refs=refs), x)
    want_refs = central_differences(lambda v: reference(labels, x, **kwargs, ref_labels=ref_labels, refs=v), refs)
    np.testing.assert_allclose(grad_x, want_x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_refs, want_refs, rtol=1e-4, atol=1e-5)


def test_instance_label_rank_targets_take_no_references():
    labels, x, ref_labels, refs = REFS
    with pytest.raises(ValueError, match="instance: label_rank_targets .* not with references"):
        losses.get("instance", label_rank_targets=True)(labels, x.astype("float32"), ref_labels, refs.astype("float32"))


# ------------------------------------------------------------------------- maximum_loss miner
MAXIMUM_LOSS = {  # fixture case -> (dmltf loss kwargs: PML's TripletMarginLoss, inner miner or None, num_trials)
    "maximum_loss": ({"margin": 0.05, "reduction": "mean_nonzero"}, None, 5),
    "maximum_loss_semihard": ({"margin": 0.5, "reduction": "mean_nonzero"},
                              {"name": "triplet_margin", "config": {"margin": 0.5, "type_of_triplets": "semihard"}}, 4),
}


def maximum_loss_miner(case, kind, seed=0):
    loss_kwargs, inner, trials = MAXIMUM_LOSS[case]
    size = int(PML17.recorded(case, kind)["output_batch_size"])
    return miners.get("maximum_loss", loss=losses.get("triplet", **loss_kwargs), miner=inner, num_trials=trials,
                      output_batch_size=size, seed=seed)


def as_masks(subsets, batch_size):
    masks = np.zeros((len(subsets), batch_size), bool)
    np.put_along_axis(masks, subsets, True, axis=1)
    return masks


@pytest.mark.parametrize("case", cases_here(MAXIMUM_LOSS, ("maximum_loss_semihard",)))
def test_maximum_loss_scores_and_chooses_pmls_subsets_as_pml(case):
    for kind in on_this_backend(KINDS):
        labels, x, _, _ = PML17.batch(kind)
        want = PML17.recorded(case, kind)
        miner = maximum_loss_miner(case, kind)
        subsets = as_masks(want["subsets"], len(x))
        miner.draw_subsets = lambda batch_size: subsets  # noqa: B023 (PML's draws instead of dmltf's)
        msg = f"{case} on the {kind} batch"
        same = labels[:, None] == labels[None, :]
        pos, neg = same & ~np.eye(len(labels), dtype=bool), ~same
        distance = miner.loss.distance
        x32 = x.astype("float32")
        _, trial_losses = miner.select_from(subsets, distance.pairwise(x32, x32), pos, neg, distance, x32)
        np.testing.assert_allclose(np.asarray(trial_losses), want["trial_losses"], rtol=1e-5, atol=1e-7, err_msg=msg)
        assert np.argmax(want["trial_losses"]) == np.argmax(np.asarray(trial_losses)), msg
        step = losses.get("triplet", **MAXIMUM_LOSS[case][0], miner=miner)  # PML's trainer step on the winner
        value, grad_x, _, _ = value_and_grads(step, labels, x)
        assert_matches(value, grad_x, want, msg)


def test_maximum_loss_draws_are_seeded_subsets_of_the_size_asked():
    def draws(seed):
        miner = miners.get("maximum_loss", loss="triplet", output_batch_size=5, num_trials=4, seed=seed)
        return [np.asarray(miner.draw_subsets(9)) for _ in range(2)]

    first, again, other = draws(5), draws(5), draws(6)
    for subsets in first + other:
        assert subsets.shape == (4, 9) and np.all(subsets.sum(axis=1) == 5)
    np.testing.assert_array_equal(np.stack(first), np.stack(again))  # the same seed, the same draws
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[0], other[0])


def test_maximum_loss_in_a_compiled_step_continues_its_draws_and_replays_with_its_seed():
    labels, x, _, _ = PML17.batch("ragged")

    def steps(seed, count):
        loss = losses.get("contrastive", miner=miners.get("maximum_loss", loss="contrastive", output_batch_size=4,
                                                          num_trials=2, seed=seed))
        if keras.backend.backend() == "jax":  # jitted, the miner's seed state carried out of the function
            return [value_of(lambda x: loss(labels, x), [x], state=loss.non_trainable_variables) for _ in range(count)]
        step = compiled(lambda x: loss(labels, x))
        return [float(step(x.astype("float32"))) for _ in range(count)]

    first, again = steps(7, 2), steps(7, 1)
    assert first[0] == again[0] and first[0] != first[1]  # each step draws anew: the state is updated
    assert all(np.isfinite(first))


@pytest.mark.tensorflow_only
def test_maximum_loss_returns_every_pair_of_the_subset_of_largest_loss():
    labels, x, _, _ = PML17.batch("ragged")
    x = x.astype("float32")
    drawn = np.asarray(miners.get("maximum_loss", loss="triplet", output_batch_size=5, num_trials=4,
                                  seed=5).draw_subsets(9))
    mined = miners.get("maximum_loss", loss="triplet", output_batch_size=5, num_trials=4, seed=5)(labels, x)
    used = np.asarray(mined.pos) + np.asarray(mined.neg)
    assert isinstance(mined, Pairs) and used.max() == 1.0
    scores = [float(losses.get("triplet")(labels[s], x[s])) for s in drawn]  # each subset as a batch of its own
    winner = drawn[int(np.argmax(scores))]
    np.testing.assert_array_equal(used > 0, winner[:, None] & winner[None, :] & ~np.eye(9, dtype=bool))


def test_maximum_loss_refuses_what_it_cannot_do():
    labels, x, _, _ = PML17.batch("distinct")
    x = x.astype("float32")
    with pytest.raises(ValueError, match="output_batch_size=6 is larger than the batch"):
        miners.get("maximum_loss", loss="triplet", output_batch_size=6)(labels, x)
    with pytest.raises(ValueError, match="takes no references"):
        miners.get("maximum_loss", loss="triplet", output_batch_size=2)(labels, x, labels, x)
    with pytest.raises(ValueError, match="the loss was given references"):
        losses.get("contrastive", miner=miners.get("maximum_loss", loss="triplet", output_batch_size=2))(
            labels, x, labels, x)
    with pytest.raises(ValueError, match="takes no miner"):
        miners.get("maximum_loss", loss="instance", output_batch_size=2, miner="semi_hard")
    with pytest.raises(ValueError, match="num_trials must be an integer >= 1"):
        miners.get("maximum_loss", loss="triplet", output_batch_size=2, num_trials=0)


@pytest.mark.tensorflow_only  # serialisation is the backend's only through the calls it compares
@pytest.mark.parametrize("spec", [
    ("instance", {"gamma": 8.0, "label_rank_targets": True}),
    ("centroid_triplet", {"margin": 0.5, "soft": True, "distance": "cosine"}),
    ("contrastive", {"miner": {"name": "maximum_loss", "config": {
        "loss": "triplet", "output_batch_size": 6, "miner": "semi_hard", "num_trials": 3, "seed": 4}}}),
], ids=lambda spec: spec[0])
def test_config_round_trip(spec):
    name, kwargs = spec
    loss = losses.get(name, **kwargs)
    labels, x, _, _ = PML17.batch("uneven")
    x = x.astype("float32")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is type(loss) and again.get_config() == loss.get_config()
    assert float(again(labels, x)) == pytest.approx(float(loss(labels, x)), rel=1e-6)
