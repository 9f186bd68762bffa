"""PaddlePaddle metric_learning's two-stage SOP recipe (METHODS.md 5): the packed-triplet form of its
triplet loss, per-replica losses (--loss_scope=replica), its image pipeline against OpenCV, and
every paddle_sop_*.cfg end to end on a miniature SOP, stage 2 starting from stage 1."""
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import config
from recipes import flagfile_flags
from dmltf import losses, miners
from dmltf.data import augmentation
from dmltf.methods import loss_scope

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- the triplet form
def test_packed_triplets_give_paddles_triplet_loss():
    """tripletloss.py: normalise, reshape to [B/3, 3, D], mean_t relu(|a - p|^2 + m - |a - n|^2)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5))
    labels = np.array([0, 0, 1, 2, 2, 0, 1, 1, 3, 3, 3, 4])  # four valid triples [a, p, n]
    f = x / np.linalg.norm(x, axis=1, keepdims=True)
    a, p, n = f[0::3], f[1::3], f[2::3]
    want = np.mean(np.maximum(0.0, ((a - p) ** 2).sum(1) + 0.1 - ((a - n) ** 2).sum(1)))
    loss = losses.get("triplet", margin=0.1, miner="packed_triplets", distance="squared_euclidean", reduction="mean")
    got = float(loss(labels, f.astype("float32")))
    assert want > 0.05 and got == pytest.approx(want, rel=1e-5)


def test_packed_triplets_drop_what_is_not_a_triple_and_refuse_a_ragged_batch():
    miner = miners.get("packed_triplets")
    t = miner(np.array([0, 0, 1, 0, 1, 1, 2, 2, 2]), np.zeros((9, 2), "float32"))
    assert np.asarray(t.anchor).tolist() == [0, 3, 6] and np.asarray(t.weight).tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="not a multiple of 3"):
        miner(np.array([0, 0, 1, 1]), np.zeros((4, 2), "float32"))


def test_the_softmax_head_starts_as_paddles_fc():
    """softmaxloss.py: fc(size=class_dim) with Uniform(-1/sqrt(2048), 1/sqrt(2048)) weights, bias 0."""
    keras.utils.set_random_seed(0)
    head = losses.get("softmax", num_classes=400, embedding_dim=2048, initializer="kaiming_uniform")
    head(np.array([0]), np.ones((1, 2048), "float32"))
    w, bound = np.asarray(head.proxies), 1 / np.sqrt(2048)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.999 * bound
    assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.01) and abs(np.mean(w)) < 1e-4
    assert np.abs(np.asarray(head.bias)).max() == 0


# ----------------------------------------------------------------------------- per-replica losses
def _halves_strategy():
    # Reduction through one device, not collectives (see tests/test_clipping.py).
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")[:2]],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())


def test_replica_scope_gives_each_replica_the_loss_of_its_half(tmp_path):
    """On 2 logical CPUs each replica's loss is the single-device loss of its half of the batch,
    and one SGD step moves the weights by the mean of the halves' gradients."""
    from test_trainer import small_cfg

    from dmltf import data
    from dmltf.training.experiment import build_trainer

    cfg = small_cfg(tmp_path / "run", loss="margin_sample_mining", batch_sampler="class_blocks", classes_per_batch=8,
                    samples_per_class=2, loss_scope="replica", freeze_bn=True, max_steps=1, lr=0.5)
    strategy = _halves_strategy()
    trainer = build_trainer(cfg, strategy=strategy)
    batch = next(iter(data.train_dataset(trainer.train_split, trainer.sampler, seed=0, epoch=0, preprocessing="none")))
    images, labels = (np.asarray(t) for t in batch)
    halves = [(images[:8], labels[:8]), (images[8:], labels[8:])]
    method = trainer.method
    variables = method.trainable_variables
    before = [v.numpy().copy() for v in variables]
    half_losses, half_grads = [], []
    for half in halves:
        with tf.GradientTape() as tape:
            value = method.compute_losses(half)["loss"]
        half_losses.append(float(value))
        half_grads.append([np.asarray(g) for g in tape.gradient(value, variables)])
    assert abs(half_losses[0] - half_losses[1]) > 1e-4  # the halves really differ

    shares = strategy.experimental_distribute_values_from_function(lambda ctx: halves[ctx.replica_id_in_sync_group])
    with loss_scope("replica"):
        per_replica = strategy.run(lambda b: method.compute_losses(b)["loss"], args=(shares,))
    assert [float(v) for v in strategy.experimental_local_results(per_replica)] == pytest.approx(half_losses, rel=1e-5)

    trainer.fit()
    for v, b, g0, g1 in zip(variables, before, *half_grads):
        np.testing.assert_allclose(v.numpy(), b - 0.5 * (g0 + g1) * 0.5, rtol=1e-4, atol=1e-6)


def test_unknown_loss_scope_is_refused(tmp_path):
    from test_trainer import small_cfg

    from dmltf.training.experiment import build_trainer

    with pytest.raises(ValueError, match="--loss_scope must be one of global, replica"):
        build_trainer(small_cfg(tmp_path / "run", loss_scope="gpu"))


# ----------------------------------------------------------------------------- the image pipeline
cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize("shape,size", [((37, 53), (224, 224)), ((300, 200), (224, 224)), ((64, 64), (17, 29))])
def test_lanczos4_resize_is_opencvs(shape, size):
    img = np.random.default_rng(1).integers(0, 256, (*shape, 3)).astype(np.uint8)
    want = cv2.resize(img, size[::-1], interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
    got = augmentation.lanczos4_resize(tf.constant(img), size).numpy()
    assert np.abs(got - want).max() <= 1.0 and np.abs(got - want).mean() < 0.1  # OpenCV's fixed-point weights


@pytest.mark.parametrize("shape", [(300, 200), (231, 400)])
def test_paddle_eval_is_resize_short_then_centre_crop(shape):
    """imgtool.resize_short (round(side * 224 / short), Lanczos) then crop_image(center=True)."""
    img = np.random.default_rng(2).integers(0, 256, (*shape, 3)).astype(np.uint8)
    percent = 224 / min(shape)
    w, h = int(round(shape[1] * percent)), int(round(shape[0] * percent))
    resized = cv2.resize(img, (w, h), interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
    top, left = (h - 224) // 2, (w - 224) // 2
    want = resized[top:top + 224, left:left + 224]
    got = augmentation.get("paddle").eval(tf.constant(img)).numpy()
    assert got.shape == (224, 224, 3) and np.abs(got - want).max() <= 1.0


def test_paddle_train_crops_follow_imgtool_random_crop():
    """Area fraction in [0.08, 1] (clamped to fit), w / h uniform in [3/4, 4/3] before truncation."""
    aug = augmentation.get("paddle")
    boxes = np.array([[int(v) for v in aug._crop_box(120, 160, tf.constant([i, 7], tf.int64))] for i in range(60)])
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 120).all() and (left + w <= 160).all()
    area = h * w / (120 * 160)
    assert area.min() >= 0.06 and area.max() <= 1.0 and area.std() > 0.1
    assert (w / h >= 0.7).all() and (w / h <= 1.4).all() and np.ptp(w / h) > 0.3
    image = tf.constant(np.random.default_rng(3).integers(0, 256, (120, 160, 3)).astype(np.uint8))
    assert tuple(aug.train(image, tf.constant([1, 2], tf.int64)).shape) == (224, 224, 3)


# ----------------------------------------------------------------------------- flagfiles end to end
FLAGFILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "train", "configs", "paddle_sop_*.cfg")))
STAGE1 = ("paddle_sop_arcmargin.cfg", "paddle_sop_softmax.cfg")
# Miniature SOP: 3 training classes of 2, 3, 2 images.
BATCHES = {"random": (3, 2), "paddle_triplet": (2, 3), "class_blocks": (3, 2)}


def _cfg(flagfile, dataset, logdir, **extra):
    flags = flagfile_flags(flagfile)
    p, k = BATCHES[flags["batch_sampler"]]
    return config.make(**{**flags, "dataset": dataset, "logdir": str(logdir), "backbone": "small_cnn",
                          "backbone_weights": "", "image_size": 32, "classes_per_batch": p, "samples_per_class": k,
                          "max_steps": 2, "eval_every_steps": 0, "progress": "none", "export": False,
                          "tb_neighbours": 0, "tb_projector_points": 0, **extra})


@pytest.fixture(scope="module")
def stage1_runs(mini_sop, tmp_path_factory):
    from dmltf.training.experiment import run

    runs = {}
    for flagfile in STAGE1:
        logdir = tmp_path_factory.mktemp("stage1") / flagfile
        trainer, rows = run(_cfg(flagfile, mini_sop, logdir))
        assert 0 <= rows[-1][1]["recall@1"] <= 1 and int(trainer.step.numpy()) == 2
        runs[flagfile] = (str(logdir), trainer)
    return runs


def test_the_recipe_has_its_six_flagfiles():
    assert FLAGFILES == sorted(["paddle_sop_arcmargin.cfg", "paddle_sop_softmax.cfg", "paddle_sop_triplet.cfg",
                                "paddle_sop_quadruplet.cfg", "paddle_sop_eml.cfg", "paddle_sop_npairs.cfg"])
    stage1 = config.make(**flagfile_flags("paddle_sop_arcmargin.cfg"))
    assert (stage1.lr, stage1.lr_boundaries, stage1.max_steps, stage1.embedding_dim) == (0.01, ["15000", "25000"],
                                                                                         30000, 0)


@pytest.mark.parametrize("flagfile", [f for f in FLAGFILES if f not in STAGE1])
def test_stage2_starts_from_stage1(flagfile, mini_sop, stage1_runs, tmp_path):
    """Each stage-2 flagfile fine-tunes from the stage-1 run: its embeddings before any step are
    the stage-1 model's, exactly; then it trains."""
    from dmltf.training.experiment import build_trainer, run
    from dmltf.training.trainer import embed_split

    stage1_dir, stage1 = stage1_runs["paddle_sop_arcmargin.cfg"]
    cfg = _cfg(flagfile, mini_sop, tmp_path / "run", init_from=stage1_dir)
    trainer = build_trainer(cfg)
    before, _ = embed_split(trainer.method, trainer.eval_split, cfg, trainer.preprocessing)
    final, _ = embed_split(stage1.method, stage1.eval_split, cfg, stage1.preprocessing)
    if not cfg.l2_normalize:  # stage 1's model ends without normalisation, as eml and npairs train
        np.testing.assert_allclose(before, final, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(before, final / np.linalg.norm(final, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    _, rows = run(cfg, trainer=trainer)
    assert 0 <= rows[-1][1]["recall@1"] <= 1 and int(trainer.step.numpy()) == 2
