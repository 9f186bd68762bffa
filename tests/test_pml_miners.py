"""The miners ported from pytorch-metric-learning 2.9 against what PML selects on fixed inputs
(recorded once by tests/fixtures/pml_miners/record.py; torch is never needed here), plus
invariants of the random uniform_histogram miner, flags and an end-to-end step. Budget: < 30 s."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import config
from dmltf import losses, miners
from dmltf.miners import Pairs, Triplets
from dmltf.training.builders import build_loss, component_flags
from recorded_losses import on_this_backend

pytestmark = pytest.mark.backend_neutral

FIXTURE = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "pml_miners", "pml_miners.npz"))
BATCHES = ("balanced", "ragged", "refs", "one_class", "distinct")
NEW_MINERS = ("triplet_margin", "batch_easy_hard", "angular", "hdc", "uniform_histogram")


def batch(name):
    get = lambda part: FIXTURE[f"input__{name}__{part}"] if f"input__{name}__{part}" in FIXTURE else None  # noqa: E731
    return get("labels"), get("x"), get("ref_labels"), get("refs")


def sort_rows(t):
    t = np.asarray(t, "int64")
    return t[np.lexsort(t.T[::-1])] if len(t) else t


def as_rows(mined):
    """("triplets", rows) or ("pairs", pos rows, neg rows) as PML returns them."""
    if isinstance(mined, Triplets):
        w = np.asarray(mined.weight) > 0
        a, p, n = (np.asarray(v)[w] for v in mined[:3])
        return sort_rows(np.stack([a, p, n], 1)), sort_rows(np.stack([a, p], 1)), sort_rows(np.stack([a, n], 1))
    pos, neg = (np.asarray(v) for v in mined)
    assert set(np.unique(pos)) <= {0.0, 1.0} and set(np.unique(neg)) <= {0.0, 1.0}
    return None, sort_rows(np.argwhere(pos > 0)), sort_rows(np.argwhere(neg > 0))


def recorded(miner):
    """[(config name, distance, batch, key)] of the recorded selections of ``miner``."""
    out = []
    for key in FIXTURE.files:
        parts = key.split("__")
        if parts[0] == miner and parts[-1] != "neg":
            base = key[: -len("__pos")] if parts[-1] == "pos" else key
            out.append((*base.split("__")[1:], base))
    return out


KWARGS = {  # the PML constructor arguments of each recorded configuration (record.py's CONFIGS)
    "triplet_margin": lambda c: dict(type_of_triplets=c.split("_m")[0], margin=float(c.split("_m")[1])),
    "hdc": lambda c: dict(filter_percentage=float(c[1:])),
    "angular": lambda c: dict(angle=float(c[1:])),
}


def beh_kwargs(c):
    if c == "hard_hard_ranges":
        return dict(pos_strategy="hard", neg_strategy="hard", allowed_pos_range=(0.5, 3.0),
                    allowed_neg_range=(2.0, 4.0))
    if c == "easy_semihard_ranges":
        return dict(allowed_pos_range=(-0.5, 0.8), allowed_neg_range=(-0.2, 0.9))
    p, n = c.split("_")
    return dict(pos_strategy=p, neg_strategy=n)


KWARGS["batch_easy_hard"] = beh_kwargs


@pytest.mark.parametrize("miner_name", ["triplet_margin", "batch_easy_hard", "angular", "hdc"])
@pytest.mark.parametrize("batch_name", on_this_backend(BATCHES))
def test_selection_equals_pml(miner_name, batch_name):
    labels, x, ref_labels, refs = batch(batch_name)
    cases = [c for c in recorded(miner_name) if c[2] == batch_name]
    assert len(cases) >= 3
    for conf, dist, _, key in cases:
        kwargs = KWARGS[miner_name](conf)
        if dist != "default":
            kwargs["distance"] = dist
        triplets, pos, neg = as_rows(miners.get(miner_name, **kwargs)(labels, x, ref_labels, refs))
        if key in FIXTURE:  # PML returned triplets
            np.testing.assert_array_equal(triplets, FIXTURE[key], err_msg=key)
        else:
            want_pos, want_neg = FIXTURE[key + "__pos"], FIXTURE[key + "__neg"]
            if miner_name == "hdc" and refs is None:
                # Without references d(i, j) and d(j, i) tie exactly (float64, PML) or nearly
                # (float32 Gram, here); the fraction's cut-off may fall between the two, and
                # torch.topk breaks ties its own way: compare the unordered pairs.
                pos, neg, want_pos, want_neg = (sort_rows(np.sort(t, axis=1)) for t in (pos, neg, want_pos, want_neg))
            np.testing.assert_array_equal(pos, want_pos, err_msg=key + " pos")
            np.testing.assert_array_equal(neg, want_neg, err_msg=key + " neg")


def test_fixture_covers_every_type_and_is_not_trivial():
    for t in ("all", "hard", "semihard", "easy"):
        assert len(FIXTURE[f"triplet_margin__{t}_m0.5__euclidean__ragged"]) > 0, t
    assert len(FIXTURE["angular__a35__default__balanced"]) > 0
    assert len(FIXTURE["batch_easy_hard__easy_semihard__euclidean__distinct__pos"]) == 0


# ----------------------------------------------------------------------- uniform_histogram
def numpy_bins(values, num_bins):
    """PML's bins, float64: edges linspace(min, max), [e_i, e_i+1), the last one closed."""
    edges = np.linspace(values.min(), values.max(), num_bins + 1)
    idx = np.searchsorted(edges, values, side="right") - 1
    return np.clip(idx, 0, num_bins - 1)


def pair_masks(labels, ref_labels):
    same = labels[:, None] == ref_labels[None, :]
    pos = same & ~np.eye(len(labels), len(ref_labels), dtype=bool) if ref_labels is labels else same
    return pos, ~same


@pytest.mark.parametrize("batch_name", on_this_backend(BATCHES))
def test_uniform_histogram_invariants_and_pml_frequencies(batch_name):
    labels, x, ref_labels, refs = batch(batch_name)
    r_labels, r = (labels, x) if refs is None else (ref_labels, refs)
    pos, neg = pair_masks(labels, r_labels)
    d = np.sqrt(((x[:, None].astype(np.float64) - r[None]) ** 2).sum(-1))
    miner = miners.get("uniform_histogram", num_bins=5, pos_per_bin=3, neg_per_bin=3, seed=11)
    draw = lambda: tuple(miner(labels, x, ref_labels, refs))  # noqa: E731
    if keras.backend.backend() == "tensorflow":
        draw = tf.function(draw)  # as the trainer runs it; elsewhere eager: the seed state advances each call
    runs = 400
    freq = {"pos": np.zeros(d.shape), "neg": np.zeros(d.shape)}
    for _ in range(runs):
        for side, mask, drawn in zip(("pos", "neg"), (pos, neg), draw()):
            drawn = np.asarray(drawn)
            assert not drawn[~mask].any()  # only valid pairs
            if mask.any():
                bins = numpy_bins(d[mask], 5)
                chosen = numpy_bins(d[mask], 5)[drawn[mask] > 0]
                per_bin = np.bincount(chosen, minlength=5)
                nonempty = np.bincount(bins, minlength=5) > 0
                assert np.all(per_bin[nonempty] >= 1) and np.all(per_bin <= 3)  # 3 draws per non-empty bin
            else:
                assert not drawn.any()
            freq[side] += drawn
    for side, mask in (("pos", pos), ("neg", neg)):
        pml = FIXTURE[f"uniform_histogram__b5_k3__euclidean__{batch_name}__{side}"]
        ours = freq[side] / runs
        # Exact: a pair in a bin of n pairs is drawn at least once with probability 1 - (1 - 1/n)^3.
        expected = np.zeros(d.shape)
        if mask.any():
            bins = numpy_bins(d[mask], 5)
            n = np.bincount(bins, minlength=5)[bins]
            expected[mask] = 1 - (1 - 1 / n) ** 3
        np.testing.assert_allclose(pml, expected, atol=0.05, err_msg=f"PML {side}")  # 3,000 PML runs
        np.testing.assert_allclose(ours, expected, atol=0.1, err_msg=f"dmltf {side}")  # 400 runs here
    again = miners.get("uniform_histogram", num_bins=5, pos_per_bin=3, neg_per_bin=3, seed=11)
    first = miners.get("uniform_histogram", num_bins=5, pos_per_bin=3, neg_per_bin=3, seed=11)
    for a, b in zip(first(labels, x, ref_labels, refs), again(labels, x, ref_labels, refs)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same seed, same draws


@pytest.mark.tensorflow_only
def test_uniform_histogram_seed_state_is_checkpointed(tmp_path):
    labels, x, _, _ = batch("balanced")
    loss = losses.get("contrastive", miner=miners.get("uniform_histogram", num_bins=4, seed=3))
    loss(labels, x)
    path = tf.train.Checkpoint(loss=loss).save(str(tmp_path / "ckpt"))
    assert "loss/miner/seed_generator_state/.ATTRIBUTES/VARIABLE_VALUE" in dict(tf.train.list_variables(path))
    restored = losses.get("contrastive", miner=miners.get("uniform_histogram", num_bins=4, seed=99))
    tf.train.Checkpoint(loss=restored).restore(path).assert_existing_objects_matched()
    for a, b in zip(loss.miner(labels, x), restored.miner(labels, x)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the restored miner continues the draws


# ------------------------------------------------------------------ registry, flags, losses
FLAG_VALUES = {
    "triplet_margin": {"margin": 0.3, "type_of_triplets": "semihard"},
    "batch_easy_hard": {"pos_strategy": "hard", "neg_strategy": "semihard", "allowed_neg_range": ["0.1", "9"]},
    "angular": {"angle": 30.0},
    "hdc": {"filter_percentage": 0.25},
    "uniform_histogram": {"num_bins": 7, "pos_per_bin": 2, "neg_per_bin": 4},  # seed: like distance_weighted's
}


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name", NEW_MINERS)
def test_builds_from_its_flags_and_trains_a_pair_loss(name):
    flags = component_flags(config.GROUPS["loss"])
    assert {f"miner_{name}_{p}" for p in FLAG_VALUES[name]} <= set(flags)
    cfg = config.make(loss="contrastive", miner=name, **{f"miner_{name}_{p}": v for p, v in FLAG_VALUES[name].items()})
    loss = build_loss(cfg, None, num_classes=4, embedding_dim=5)
    assert type(loss.miner) is miners.get_class(name)
    for param, value in FLAG_VALUES[name].items():
        got = loss.miner.get_config()[param]
        assert got == ([float(v) for v in value] if isinstance(value, list) else value), param
    again = miners.get(miners.serialize(loss.miner))
    assert again.get_config() == loss.miner.get_config()
    labels, x, _, _ = batch("balanced")
    x = tf.Variable(x / np.linalg.norm(x, axis=1, keepdims=True))
    with tf.GradientTape() as tape:
        value = loss(labels, x)
    grad = tape.gradient(value, x)
    assert np.isfinite(float(value)) and float(value) > 0 and np.isfinite(grad.numpy()).all()
    assert np.abs(grad.numpy()).sum() > 0
    triplet = losses.get("triplet", margin=0.2, miner=loss.miner)  # and a triplet loss
    assert np.isfinite(float(triplet(labels, x)))
    graph = tf.function(lambda y, e, w: loss(y, e, sample_weight=w))  # as the trainer runs it
    weights = np.ones(len(labels), "float32")
    weights[0] = 0.0
    assert np.isfinite(float(graph(labels, x, weights)))


def test_bad_parameters_are_refused():
    for name, kwargs, match in [
        ("triplet_margin", {"type_of_triplets": "hardest"}, "type_of_triplets"),
        ("batch_easy_hard", {"pos_strategy": "semihard", "neg_strategy": "semihard"}, "both"),
        ("batch_easy_hard", {"pos_strategy": "all", "neg_strategy": "semihard"}, "combination"),
        ("batch_easy_hard", {"allowed_pos_range": (0.1,)}, "low, high"),
        ("hdc", {"filter_percentage": 1.5}, r"\[0, 1\]"),
        ("angular", {"angle": 95}, "angle"),
        ("angular", {"distance": "cosine"}, "fixed geometry"),
        ("uniform_histogram", {"num_bins": 0}, "num_bins"),
    ]:
        with pytest.raises(ValueError, match=match):
            miners.get(name, **kwargs)


def test_pair_outputs_are_masks_and_triplets_are_valid():
    labels, x, ref_labels, refs = batch("refs")
    pos, neg = pair_masks(labels, ref_labels)
    for name, kwargs in [("hdc", {}), ("uniform_histogram", {"seed": 1}),
                         ("batch_easy_hard", {"pos_strategy": "all", "neg_strategy": "hard"}),
                         ("triplet_margin", {}), ("angular", {}), ("batch_easy_hard", {})]:
        mined = miners.get(name, **kwargs)(labels, x, ref_labels, refs)
        if isinstance(mined, Pairs):
            assert not np.asarray(mined.pos)[~pos].any() and not np.asarray(mined.neg)[~neg].any()
        else:
            w = np.asarray(mined.weight) > 0
            a, p, n = (np.asarray(v)[w] for v in mined[:3])
            assert pos[a, p].all() and neg[a, n].all(), name
