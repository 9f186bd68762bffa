"""LM-Metric (dmltf/methods/lm_metric.py) against numpy float64 references written here: the
rank-weighted Smooth-AP, the batch AP reward, the REINFORCE gradient and baseline, which terms
reach the policy, the batch-order dependence, the per-image evaluation draw and the export, and
both SOP flagfiles end to end on a miniature SOP (small CNN)."""
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import config
from recipes import flagfile_flags
from dmltf import losses
from dmltf.methods.lm_metric import NUM_ACTIONS, LMMetric, batch_average_precision, build_lm_metric_models
from dmltf.models import build_embedding_model
from test_samplers import make_split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = {
    "classes": np.array([0, 0, 1, 1, 1, 2, 2, 0]),
    "one_class": np.zeros(6, int),
    "all_distinct": np.arange(5),
    "singletons": np.array([0, 0, 1, 2, 2, 3]),
}


# ----------------------------------------------------------------------------- numpy references
def np_normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def np_smooth_ap(x, y, tau, rank_weights=None):
    """Brown et al.'s Smooth-AP with LM-Metric's weights on each item's all-items rank: the batch is
    the gallery, the query one of its own items; queries without another positive are left out."""
    x = np_normalize(np.asarray(x, np.float64))
    s, n = x @ x.T, len(y)
    w = np.ones(n) if rank_weights is None else np.asarray(rank_weights, np.float64)
    sg = lambda v: 1.0 / (1.0 + np.exp(-np.clip(v / tau, -50, 50)))  # noqa: E731
    terms = []
    for q in range(n):
        pos = [i for i in range(n) if y[i] == y[q]]
        if len(pos) < 2:
            continue
        ratios = []
        for i in pos:
            others = [j for j in range(n) if j != i]
            rank_all = 1 + w[i] * sum(sg(s[q, j] - s[q, i]) for j in others)
            rank_pos = 1 + sum(sg(s[q, j] - s[q, i]) for j in others if y[j] == y[q])
            ratios.append(rank_pos / rank_all)
        terms.append(1 - np.mean(ratios))
    return np.mean(terms) if terms else 0.0


def np_average_precision(x, y, include_self):
    """Per query: AP of the batch ranked by inner product, descending, ties by index."""
    x = np.asarray(x, np.float64)
    n, out, has = len(y), [], []
    for q in range(n):
        gallery = [j for j in range(n) if include_self or j != q]
        order = sorted(gallery, key=lambda j: (-(x[q] @ x[j]), j))
        rel = np.array([y[j] == y[q] for j in order], float)
        has.append(rel.sum() > 0)
        prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        out.append((prec * rel).sum() / max(rel.sum(), 1))
    return np.array(out), np.array(has)


# ----------------------------------------------------------------------------- the loss and the reward
@pytest.mark.parametrize("kind", sorted(LABELS))
@pytest.mark.parametrize("weighted", [False, True])
def test_rank_weighted_smooth_ap_matches_numpy(kind, weighted):
    y = LABELS[kind]
    rng = np.random.default_rng(len(y))
    x = rng.normal(size=(len(y), 5))
    w = rng.integers(0, NUM_ACTIONS, len(y)).astype(float) / NUM_ACTIONS + 1 / NUM_ACTIONS if weighted else None
    for tau in (0.01, 0.5):
        loss = losses.get("smooth_ap", tau=tau)
        got = loss(y, np_normalize(x).astype("float32"), rank_weights=None if w is None else w.astype("float32"))
        assert float(got) == pytest.approx(np_smooth_ap(x, y, tau, w), abs=2e-6), tau


def test_rank_weights_of_one_are_the_plain_loss_and_other_losses_refuse_them():
    y, x = LABELS["classes"], np_normalize(np.random.default_rng(0).normal(size=(8, 4))).astype("float32")
    loss = losses.get("smooth_ap")
    assert float(loss(y, x, rank_weights=np.ones(8, "float32"))) == pytest.approx(float(loss(y, x)), abs=1e-7)
    with pytest.raises(TypeError, match="rank_weights"):
        losses.get("contrastive")(y, x, rank_weights=np.ones(8, "float32"))


@pytest.mark.parametrize("kind", sorted(LABELS))
@pytest.mark.parametrize("include_self", [False, True])
def test_batch_average_precision_matches_numpy(kind, include_self):
    y = LABELS[kind]
    x = np_normalize(np.random.default_rng(3).normal(size=(len(y), 4)))
    x[1] = x[0]  # a tie
    ap, has = batch_average_precision(tf.constant(x, tf.float32), tf.constant(y), include_self)
    want_ap, want_has = np_average_precision(x, y, include_self)
    np.testing.assert_array_equal(has.numpy(), want_has)
    np.testing.assert_allclose(ap.numpy(), want_ap, atol=1e-6)
    if include_self:  # the query ranks first in its own gallery: its AP is at least 1 / (its class size)
        assert has.numpy().all()


# ----------------------------------------------------------------------------- the method
def make_lm(mode="paper", seed=0, deterministic=False):
    keras.utils.set_random_seed(seed)
    trunk = build_embedding_model("small_cnn", (8, 8, 1), embedding_dim=0, l2_normalize=False)
    parts = build_lm_metric_models(trunk, embedding_dim=8, flow_width=4, flow_channels=4, flow_levels=1,
                                   flow_steps=2, seed=seed, deterministic=deterministic)
    return LMMetric(*parts, losses.get("smooth_ap"), mode=mode, seed=seed)


def batch(labels, seed=1):
    images = np.random.default_rng(seed).uniform(size=(len(labels), 8, 8, 1)).astype("float32")
    return images, np.asarray(labels)


def test_the_reinforce_gradient_is_minus_advantage_times_the_score_function():
    lm = make_lm("paper")
    images, y = batch(LABELS["classes"])
    lm.baseline.assign(0.3)
    t = lm.forward(images, y)  # the step's draws: forward() reads the step counter, does not advance it
    emb = np_normalize(t["e1"].numpy().astype(np.float64) + t["context"].numpy())
    reward, has = np_average_precision(emb, y, include_self=False)
    logits = t["logits"].numpy().astype(np.float64)
    pi = np.exp(logits - logits.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    onehot = np.eye(NUM_ACTIONS)[t["actions"].numpy()]
    advantage = (reward - 0.3)[:, None]
    want_bias = -(advantage * (onehot - pi)).sum(0) / has.sum()
    want_kernel = -(t["forward_states"].numpy().T @ (advantage * (onehot - pi))) / has.sum()
    with tf.GradientTape() as tape:
        out = lm.compute_losses((images, y))
    kernel, bias = tape.gradient(out["loss"], [lm.policy.kernel, lm.policy.bias])
    np.testing.assert_allclose(bias.numpy(), want_bias, atol=1e-6)
    np.testing.assert_allclose(kernel.numpy(), want_kernel, atol=1e-6)
    np.testing.assert_allclose(out["weights"].numpy(), (t["actions"].numpy() + 1) / NUM_ACTIONS)
    assert float(out["reward"]) == pytest.approx(reward.mean(), abs=1e-6)
    assert float(out["reward_baseline"]) == pytest.approx(0.3)
    assert float(lm.baseline) == pytest.approx(0.95 * 0.3 + 0.05 * reward.mean(), abs=1e-6)
    assert float(out["policy_entropy"]) == pytest.approx(-(pi * np.log(pi)).sum(1).mean(), abs=1e-5)


def test_the_policy_learns_only_from_the_rl_term_and_not_at_all_in_reference_mode():
    images, y = batch(LABELS["classes"])
    for mode in ("paper", "reference"):
        lm = make_lm(mode)
        with tf.GradientTape(persistent=True) as tape:
            out = lm.compute_losses((images, y))
            rest = out["loss"] - out["rl"] if mode == "paper" else out["loss"]
        for g in tape.gradient(rest, lm.policy.trainable_variables):
            assert g is None or not np.any(g.numpy()), mode
        assert np.isfinite(float(out["rl"])) and float(out["rl"]) != 0.0
        names = [g.name for g in lm.optimizer_groups()]
        assert names == (["backbone", "head", "flow", "policy"] if mode == "paper" else ["backbone", "head", "flow"])
        if mode == "paper":
            assert any(np.any(g.numpy()) for g in tape.gradient(out["loss"], lm.policy.trainable_variables))
        else:
            assert "reward_baseline" not in out


def test_the_reference_reward_ranks_the_query_in_its_own_gallery():
    lm = make_lm("reference")
    images, y = batch(LABELS["classes"])
    t = lm.forward(images, y)
    emb = np_normalize(t["e1"].numpy().astype(np.float64) + t["context"].numpy())
    reward, _ = np_average_precision(emb, y, include_self=True)
    out = lm.compute_losses((images, y))
    logits = t["logits"].numpy().astype(np.float64)
    log_pi = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    want_rl = -(reward * log_pi[np.arange(len(y)), t["actions"].numpy()]).mean()
    assert float(out["reward"]) == pytest.approx(reward.mean(), abs=1e-6)
    assert float(out["rl"]) == pytest.approx(want_rl, rel=1e-5)
    assert float(lm.baseline) == 0.0


def test_only_the_gru_makes_the_context_depend_on_batch_order():
    lm = make_lm()
    images, y = batch(LABELS["classes"])
    perm = np.random.default_rng(0).permutation(len(y))
    a, b = lm.forward(images, y), lm.forward(images[perm], y[perm])
    np.testing.assert_allclose(b["e1"].numpy(), a["e1"].numpy()[perm], atol=1e-6)
    assert np.abs(b["context"].numpy() - a["context"].numpy()[perm]).max() > 1e-4
    # The evaluation embedding has no batch context: it is the same whatever the order or batch size.
    whole = lm.embed(images).numpy()
    np.testing.assert_allclose(lm.embed(images[perm]).numpy(), whole[perm], atol=1e-6)
    np.testing.assert_allclose(np.concatenate([lm.embed(images[i:i + 1]).numpy() for i in range(len(y))]), whole,
                               atol=1e-6)


def test_the_evaluation_draw_is_fixed_per_image_and_deterministic_mode_uses_z_zero():
    lm = make_lm()
    images, _ = batch(LABELS["classes"])
    e1 = lm.mapping(lm.feature_model(images)).numpy()
    cond = e1.reshape(-1, *lm.flow.image_shape)
    zero = lm.flow.inverse(tf.zeros_like(cond), cond, training=False).numpy().reshape(e1.shape)
    drawn = lm.embed(images).numpy()
    assert np.abs(drawn - np_normalize(e1 + zero)).max() > 1e-4  # a draw, not z = 0
    same = images.copy()
    same[3] = same[0]
    again = lm.embed(same).numpy()
    np.testing.assert_allclose(again[3], again[0], atol=1e-7)  # the same image, the same draw
    np.testing.assert_allclose(again[0], drawn[0], atol=1e-7)
    fixed = make_lm(deterministic=True)
    fixed.set_weights(lm.get_weights())
    np.testing.assert_allclose(fixed.embed(images).numpy(), np_normalize(e1 + zero), atol=1e-5)


def test_the_embedding_model_saves_and_loads(tmp_path):
    lm = make_lm()
    images, _ = batch(LABELS["classes"])
    path = str(tmp_path / "lm.keras")
    lm.embedding_model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(images)), lm.embed(images).numpy(), atol=1e-6)


def test_the_main_loss_must_take_rank_weights():
    trunk = build_embedding_model("small_cnn", (8, 8, 1), embedding_dim=0, l2_normalize=False)
    parts = build_lm_metric_models(trunk, embedding_dim=8, flow_width=4, flow_channels=4, flow_levels=1, flow_steps=1)
    with pytest.raises(ValueError, match="rank_weights"):
        LMMetric(*parts, losses.get("contrastive"))
    with pytest.raises(ValueError, match="flow_width"):
        build_lm_metric_models(trunk, embedding_dim=10, flow_width=4)


# ----------------------------------------------------------------------------- flagfiles end to end
FLAGFILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "train", "configs", "lm_metric_*.cfg")))
TAGS = ["train/smooth_ap", "train/smooth_ap_flow", "train/flow_nll", "train/rl", "train/reward",
        "train/policy_entropy", "train/weights", "train/loss", "eval/recall@1", "eval/map_c", "eval/map_c@1000"]


def test_the_recipe_flagfiles():
    assert FLAGFILES == ["lm_metric_cars196.cfg", "lm_metric_cub200.cfg", "lm_metric_sop.cfg",
                         "lm_metric_sop_reference.cfg"]
    sop = config.make(**flagfile_flags("lm_metric_sop.cfg"))
    assert (sop.method, sop.lm_metric_mode, sop.batch_sampler, sop.classes_per_batch * sop.samples_per_class,
            sop.lr, sop.weight_decay_mode, sop.lr_step_size, sop.epochs, sop.warmup_epochs) == (
        "lm_metric", "paper", "hierarchical", 176, 1e-4, "l2", 20, 200, 5)
    ref = config.make(**flagfile_flags("lm_metric_sop_reference.cfg"))
    assert (ref.lm_metric_mode, ref.preprocessing, sop.preprocessing) == ("reference", "torch_imagenet_lm",
                                                                          "torch_imagenet")


def test_the_reference_normalisation_keeps_its_std_typo():
    from dmltf.data import preprocessing

    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 3, 3)).astype("float32")
    want = (x.astype(np.float64) / 255 - [0.485, 0.456, 0.406]) / [0.228, 0.224, 0.225]
    np.testing.assert_allclose(np.asarray(preprocessing.get("torch_imagenet_lm")(x)), want, rtol=1e-5, atol=1e-5)


def test_the_sop_flagfile_batches_have_the_seed_structure_on_the_sop_counts():
    """The flagfile's hierarchical sampler on SOP's training counts (11,318 classes, 59,551 images,
    12 super-classes): 660 batches an epoch, each two half-batches of 22 classes x 4 images of
    one super-class each."""
    from collections import Counter

    from dmltf.data import samplers

    flags = config.make(**flagfile_flags("lm_metric_sop.cfg"))
    sizes = np.full(11318, 5)
    sizes[np.random.default_rng(0).permutation(11318)[:59551 - 5 * 11318]] += 1  # 5 or 6 images a class
    labels = np.repeat(np.arange(11318), sizes)
    super_labels = np.repeat(np.arange(11318) % 12, sizes)
    split = make_split(labels, super_labels, name="sop_counts")
    sampler = samplers.get(flags.batch_sampler, classes_per_batch=flags.classes_per_batch,
                           samples_per_class=flags.samples_per_class)
    batches = sampler.batches(split, seed=0, epoch=0)
    assert len(labels) == 59551 and sampler.steps_per_epoch(split) == 660 and batches.shape == (660, 176)
    for batch in batches[:: 11]:
        halves = Counter(super_labels[batch].tolist())
        assert len(halves) == 2 and set(halves.values()) == {88}
        assert set(Counter(labels[batch].tolist()).values()) == {4} and len(set(labels[batch].tolist())) == 44


@pytest.mark.parametrize("flagfile", ["lm_metric_sop.cfg", "lm_metric_sop_reference.cfg"])
def test_sop_flagfile_runs_end_to_end_and_the_export_computes_the_evaluation(flagfile, mini_sop, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import h5py

    from dmltf.training.experiment import run

    flags = flagfile_flags(flagfile)
    paper = flags["lm_metric_mode"] == "paper"
    # Miniature SOP: training classes 1, 2 (super-class 1) and 3 (super-class 3), one class a half.
    cfg = config.make(**{**flags, "dataset": mini_sop, "logdir": str(tmp_path / "run"), "backbone": "small_cnn",
                         "backbone_weights": "", "image_size": 16, "embedding_dim": 16, "lm_metric_flow_width": 4,
                         "lm_metric_flow_channels": 4, "lm_metric_flow_levels": 1, "lm_metric_flow_steps": 2,
                         "classes_per_batch": 2, "samples_per_class": 2, "sampler_hierarchical_batches_per_pair": 2,
                         "eval_every": 1, "progress": "none", "tb_neighbours": 0, "tb_projector_points": 0,
                         # The paper run: a warm-up epoch then a full one, exported; the reference run: one epoch.
                         **(dict(epochs=2, warmup_epochs=1, export=True, save_embeddings=True) if paper else
                            dict(epochs=1, warmup_epochs=0, export=False))})
    trainer, rows = run(cfg)
    assert int(trainer.step.numpy()) == 2 * cfg.epochs and 0 <= rows[-1][1]["recall@1"] <= 1
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    for tag in TAGS + (["train/reward_baseline"] if cfg.lm_metric_mode == "paper" else []):
        assert tag in tags, tag
    histogram = tf.make_ndarray(acc.Tensors("train/weights")[-1].tensor_proto)  # (left, right, count) rows
    assert histogram[:, 2].sum() == 8 and histogram[0, 0] >= 1 / NUM_ACTIONS and histogram[-1, 1] <= 1
    if not paper:
        return
    with h5py.File(tmp_path / "run" / "embeddings.h5") as f:
        evaluated = f["embeddings"][:]
    exported = keras.models.load_model(str(tmp_path / "run" / "export" / "embedding_model.keras"))
    from dmltf import data

    images = np.concatenate([x.numpy() for x, _ in data.eval_dataset(
        trainer.eval_split, 3, augmentation=cfg.augmentation, preprocessing=trainer.preprocessing,
        image_size=cfg.image_size)])
    np.testing.assert_allclose(np.asarray(exported(images)), evaluated, atol=1e-5)
