"""The trainer spine: distribution, optimizer groups, warm-up, resume, TensorBoard output, export.

Runs on the bundled digits with the small CNN; ``conftest.py`` gives two logical CPU devices.
"""
import functools
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import config
from dmltf import data
from dmltf.training import builders
from dmltf.training.experiment import build_trainer, run
from dmltf.training.trainer import distribute_batches


def small_cfg(tmp_path, **overrides):
    base = dict(
        dataset="digits", backbone="small_cnn", embedding_dim=16, classes_per_batch=10, samples_per_class=4,
        epochs=1, max_steps_per_epoch=3, eval_every=0, progress="none", export=False, logdir=str(tmp_path),
        tb_neighbours=0, tb_projector_points=0, eval_metrics=["recall@1", "map@r"], optimizer="sgd", momentum=0.0,
        weight_decay=0.0, lr=0.05,
    )
    base.update(overrides)
    return config.make(**base)


def weights(trainer):
    return [v.numpy().copy() for v in trainer.method.trainable_variables]


@functools.lru_cache(maxsize=None)
def mirrored():
    """One strategy per process: two MirroredStrategy objects over the same devices reuse
    collective keys, and their collectives can then clash."""
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")[:2]])


def test_balanced_batches_give_each_replica_whole_class_groups():
    train, _ = builders.load_digits_splits("stratified")
    strategy = mirrored()
    sampler = data.samplers.get("balanced", 4, 3)
    make = lambda shard: data.train_dataset(train, sampler, seed=1, epoch=0, num_replicas=2, shard=shard).take(2)
    expected = list(make(None))
    for (images, labels), (global_images, global_labels) in zip(distribute_batches(strategy, make, 12), expected):
        shares = strategy.experimental_local_results(labels)
        assert len(shares) == 2
        for share in shares:
            share = share.numpy()
            assert share.shape == (6,)
            # 2 classes x 3 images, contiguous groups
            assert len(set(share[:3])) == 1 and len(set(share[3:])) == 1 and share[0] != share[3]
        np.testing.assert_array_equal(np.concatenate([s.numpy() for s in shares]), global_labels.numpy())
        img_shares = strategy.experimental_local_results(images)
        np.testing.assert_array_equal(np.concatenate([s.numpy() for s in img_shares]), global_images.numpy())


@pytest.mark.parametrize("loss,extra", [
    ("proxy_anchor", {"freeze_bn": True}),
    ("triplet", {"miner": "semi_hard", "distance": "squared_euclidean", "loss_triplet_margin": 1.0, "freeze_bn": True}),
    # A seeded sampling miner and a loss that reads the static embedding width.
    ("margin", {"miner": "distance_weighted", "freeze_bn": True}),
    # Cross-batch memory: both replicas enqueue the gathered global batch (memory used from step 2).
    ("xbm", {"loss_xbm_loss": "contrastive", "loss_xbm_memory_size": 64, "loss_xbm_warmup_steps": 1, "freeze_bn": True}),
    # Training-mode BatchNorm: global-batch statistics make N replicas normalise as one device.
    ("proxy_anchor", {"sync_batchnorm": True}),
    ("proxy_anchor", {"method": "dvml", "dvml_phase1_steps": 2, "sync_batchnorm": True, "lr": 1e-3}),
    # DRML: its branch assignment over the gathered batch; clipping of the global-batch gradient.
    ("proxy_anchor", {"method": "drml", "batch_sampler": "random", "freeze_bn": True, "clip_grad_norm": 1.0,
                      "clip_grad_steps": 2}),
    # LM-Metric: the GRU over the gathered batch in loader order, the flow's first-batch ActNorm
    # initialisation and its BatchNorm on the global batch, the policy's draws and baseline.
    ("smooth_ap", {"method": "lm_metric", "batch_sampler": "balanced", "freeze_bn": True, "lm_metric_flow_width": 4,
                   "lm_metric_flow_channels": 4, "lm_metric_flow_levels": 1, "lm_metric_flow_steps": 2, "lr": 1e-3}),
])
def test_mirrored_two_devices_matches_one_device(tmp_path, loss, extra):
    cfg = small_cfg(tmp_path / "one", loss=loss, **extra)
    one = build_trainer(cfg)
    start = weights(one)  # what a trainer of this configuration starts from
    one.fit()
    cfg2 = small_cfg(tmp_path / "two", loss=loss, **extra)
    two = build_trainer(cfg2, strategy=mirrored())
    assert two.strategy.num_replicas_in_sync == 2
    two.fit()
    moved = max(np.abs(a - b).max() for a, b in zip(weights(one), start))
    assert moved > 1e-3  # training changed the weights
    for a, b in zip(weights(one), weights(two)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)
    # The logged values are the global batch's on both (DVML's lambdas and phase included).
    logged_one, logged_two = one.history[-1], two.history[-1]
    assert set(logged_one) == set(logged_two) and "loss" in logged_one
    # LM-Metric's reward is the batch AP, a step function of the ranking: at initialisation the
    # embeddings are nearly equal (the sigmoid context dominates), and last-bit differences between
    # the devices' convolutions reorder near-ties. The weights above still agree.
    step_functions = {"rl", "reward", "loss"} if extra.get("method") == "lm_metric" else set()
    for key, value in logged_one.items():
        rel = 1e-2 if key in step_functions else 1e-4
        assert logged_two[key] == pytest.approx(value, rel=rel, abs=1e-5), key


def test_resume_after_kill_reproduces_uninterrupted_run(tmp_path):
    full = build_trainer(small_cfg(tmp_path / "full", epochs=2, optimizer="adamw", weight_decay=1e-4, lr=1e-3))
    full.fit()
    first = build_trainer(small_cfg(tmp_path / "resumed", epochs=1, optimizer="adamw", weight_decay=1e-4, lr=1e-3))
    first.fit()
    del first  # the "killed" process
    resumed = build_trainer(small_cfg(tmp_path / "resumed", epochs=2, optimizer="adamw", weight_decay=1e-4,
                                      lr=1e-3, resume=True))
    for v in resumed.method.trainable_variables:  # a wrong initialisation must be overwritten by the restore
        v.assign(tf.zeros_like(v))
    assert resumed.restore() == 1
    resumed.fit()
    assert int(resumed.step.numpy()) == int(full.step.numpy()) == 6
    for a, b in zip(weights(full), weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for ga, gb in zip(full.groups, resumed.groups):
        for va, vb in zip(ga.optimizer.variables, gb.optimizer.variables):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), atol=1e-6)


def test_group_learning_rate_multiplier_moves_proxies_by_its_factor(tmp_path):
    cfg = small_cfg(tmp_path, loss="proxy_anchor", max_steps_per_epoch=1, lr=0.01, freeze_bn=True)
    trainer = build_trainer(cfg)
    groups = {g.name: g for g in trainer.groups}
    assert groups["loss"].base_lr == pytest.approx(0.01 * 100)  # Proxy-Anchor's reference multiplier
    batch = next(iter(data.train_dataset(trainer.train_split, trainer.sampler, seed=0, epoch=0, preprocessing="none")))
    with tf.GradientTape() as tape:
        loss = trainer.method.compute_losses(batch)["loss"]
    variables = [v for g in trainer.groups for v in g.group.variables]
    grads = tape.gradient(loss, variables)
    before = [v.numpy().copy() for v in variables]
    trainer.fit()
    lr_of = {id(v): g.base_lr for g in trainer.groups for v in g.group.variables}
    for v, b, g in zip(variables, before, grads):
        np.testing.assert_allclose(v.numpy(), b - lr_of[id(v)] * g.numpy(), atol=1e-6, rtol=1e-4)
    proxies = trainer.method.loss_fn.proxies
    index = [i for i, v in enumerate(variables) if v is proxies][0]
    assert np.abs(proxies.numpy() - before[index]).max() > 0


def test_warmup_epochs_train_only_the_named_groups(tmp_path):
    cfg = small_cfg(tmp_path, warmup_epochs=1, warmup_groups=["head", "loss"], epochs=1)
    trainer = build_trainer(cfg)
    backbone = [v.numpy().copy() for v in trainer.method.embedding_model.get_layer("backbone").trainable_variables]
    head = [v.numpy().copy() for v in trainer.method.embedding_model.get_layer("head").trainable_variables]
    trainer.fit()
    for v, b in zip(trainer.method.embedding_model.get_layer("backbone").trainable_variables, backbone):
        np.testing.assert_array_equal(v.numpy(), b)
    assert any(np.abs(v.numpy() - b).max() > 0
               for v, b in zip(trainer.method.embedding_model.get_layer("head").trainable_variables, head))


def test_step_schedule_sets_each_group_rate(tmp_path):
    cfg = small_cfg(tmp_path, epochs=3, schedule="step", lr_step_size=1, lr_gamma=0.5, max_steps_per_epoch=1,
                    group_lrs=["head:0.2"])
    trainer = build_trainer(cfg)
    trainer.fit()
    rates = {g.name: g.learning_rate for g in trainer.groups}
    assert rates["backbone"] == pytest.approx(0.05 * 0.25)
    assert rates["head"] == pytest.approx(0.2 * 0.25)
    assert rates["loss"] == pytest.approx(0.05 * 100 * 0.25)


def _event_tags(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"tensors": 0})
    acc.Reload()
    return acc, set(acc.Tags()["tensors"])


def test_tensorboard_logs_scalars_histograms_neighbours_and_projector(tmp_path):
    cfg = small_cfg(tmp_path, epochs=2, eval_every=1, tb_neighbours=4, tb_projector_points=50, export=True)
    trainer, rows = run(cfg)
    acc, tags = _event_tags(str(tmp_path))
    for tag in ("train/loss", "learning_rate/backbone", "learning_rate/loss", "eval/map@r", "eval/recall@1",
                "distances/positive_pairs", "distances/negative_pairs", "neighbours/top5"):
        assert tag in tags, tag
    assert [e.step for e in acc.Tensors("eval/map@r")] == [1, 2]
    image = tf.image.decode_png(acc.Tensors("neighbours/top5")[-1].tensor_proto.string_val[2]).numpy()
    assert image.shape == (4 * 12, 6 * 12, 3)  # 4 queries x (query + 5 neighbours), 8 px + 2 px frames
    lines = open(tmp_path / "projector_tensors.tsv").read().splitlines()
    assert len(lines) == 50 and len(lines[0].split("\t")) == 16
    assert "projector_sprite.png" in open(tmp_path / "projector_config.pbtxt").read()
    # The exported model gives the trained embeddings.
    exported = keras.saving.load_model(str(tmp_path / "export" / "embedding_model.keras"))
    x = trainer.eval_split.load().images[:5].astype("float32") / 255.0
    np.testing.assert_allclose(exported(x).numpy(), trainer.method.embed(x).numpy(), atol=1e-5)
    assert rows[-1][0] == "trained" and 0 < rows[-1][1]["map@r"] <= 1


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid names: .*proxy_anchor"):
        build_trainer(small_cfg(tmp_path, loss="proxy_anchr"))
    with pytest.raises(ValueError, match="valid names: .*small_cnn"):
        build_trainer(small_cfg(tmp_path, backbone="resnet"))
    with pytest.raises(ValueError, match="valid names: .*semi_hard"):
        build_trainer(small_cfg(tmp_path, loss="triplet", miner="semihard"))
    with pytest.raises(ValueError, match="Unknown configuration keys: not_a_flag"):
        config.make(not_a_flag=1)


def test_missing_dataset_names_the_converters(tmp_path):
    with pytest.raises(FileNotFoundError, match="cars196_converter.py"):
        build_trainer(small_cfg(tmp_path, dataset=str(tmp_path / "cars196.h5")))


def test_trainer_writes_checkpoints_each_epoch_and_best(tmp_path):
    trainer = build_trainer(small_cfg(tmp_path, epochs=2, eval_every=1))
    trainer.fit()
    assert len(glob.glob(os.path.join(tmp_path, "checkpoints", "ckpt-*.index"))) == 2
    assert glob.glob(os.path.join(tmp_path, "best", "ckpt-*.index"))


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_with_float32_losses(tmp_path, precision):
    try:
        trainer = build_trainer(small_cfg(tmp_path, precision=precision, optimizer="adamw", lr=1e-3, eval_every=1))
        assert trainer.method.embedding_model.get_layer("backbone").compute_dtype == precision.split("_")[1]
        assert trainer.method.loss_fn.proxies.dtype == "float32"
        before = weights(trainer)
        metrics = trainer.fit()
        losses = trainer.history[-1]
        assert np.isfinite(losses["loss"]) and 0 <= metrics["map@r"] <= 1
        assert any(np.abs(a - b).max() > 0 for a, b in zip(weights(trainer), before))
        assert all(np.isfinite(w).all() for w in weights(trainer))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def one_backbone_per_preprocessing():
    """The cheapest registry backbone of each input normalisation (each backbone's forward pass is
    tests/test_mixed_precision.py's, its reference weights tests/test_pretrained.py's)."""
    from dmltf.models import backbones

    cheapest_first = ("googlenet", "mobilenet_v2", "resnet50_torch", "bn_inception", "resnet50")
    names = [b for b in backbones.names() if b != "small_cnn"]
    chosen = {}
    for name in sorted(names, key=lambda b: cheapest_first.index(b) if b in cheapest_first else len(names)):
        chosen.setdefault(backbones.get_spec(name).preprocessing, name)
    return sorted(chosen.values())


@pytest.fixture
def graph_rewrites_off():
    """Grappler's rewrites cost a big backbone's first step a quarter of its seconds and are not
    what the test checks; restored afterwards."""
    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before.get("disable_meta_optimizer", False)})


@pytest.mark.parametrize("backbone", one_backbone_per_preprocessing())
def test_each_preprocessing_trains_a_backbone_on_digits(tmp_path, backbone, graph_rewrites_off):
    from dmltf.models import backbones

    size = {"inception_v3": 80}.get(backbone, 64)  # Keras InceptionV3 needs >= 75 px; BN-Inception even stage maps
    cfg = small_cfg(tmp_path, backbone=backbone, image_size=size, classes_per_batch=4, samples_per_class=2,
                    max_steps_per_epoch=1, optimizer="adamw", lr=1e-3)
    trainer = build_trainer(cfg)
    assert trainer.preprocessing == backbones.get_spec(backbone).preprocessing
    assert trainer.method.embedding_model.input_shape[1:] == (size, size, 3)  # grayscale digits fed as RGB
    before = weights(trainer)
    losses = trainer.train_epoch(0)
    assert np.isfinite(losses["loss"])
    assert any(np.abs(a - b).max() > 0 for a, b in zip(weights(trainer), before))


def _one_sgd_step(tmp_path, **overrides):
    """(variables, their values before, the gradients of the first batch, the trainer) after one step."""
    cfg = small_cfg(tmp_path, loss="proxy_anchor", max_steps_per_epoch=1, freeze_bn=True, **overrides)
    trainer = build_trainer(cfg)
    batch = next(iter(data.train_dataset(trainer.train_split, trainer.sampler, seed=0, epoch=0, preprocessing="none")))
    variables = [v for g in trainer.groups for v in g.group.variables]
    with tf.GradientTape() as tape:
        loss = trainer.method.compute_losses(batch)["loss"]
    grads = [g.numpy() for g in tape.gradient(loss, variables)]
    before = [v.numpy().copy() for v in variables]
    trainer.fit()
    return variables, before, grads, trainer


def test_gradient_value_clipping(tmp_path):
    variables, before, grads, trainer = _one_sgd_step(tmp_path, lr=0.1, clip_grad_value=1e-3)
    lr_of = {id(v): g.base_lr for g in trainer.groups for v in g.group.variables}
    assert max(np.abs(g).max() for g in grads) > 1e-2  # clipping really bites
    for v, b, g in zip(variables, before, grads):
        np.testing.assert_allclose(v.numpy(), b - lr_of[id(v)] * np.clip(g, -1e-3, 1e-3), atol=1e-6, rtol=1e-4)


def test_l2_weight_decay_is_added_to_the_gradient(tmp_path):
    variables, before, grads, trainer = _one_sgd_step(tmp_path, lr=0.01, weight_decay=0.1, weight_decay_mode="l2",
                                                      group_weight_decays=["loss:0"])
    for group in trainer.groups:
        wd = 0.0 if group.name == "loss" else 0.1
        for v in group.group.variables:
            i = [j for j, u in enumerate(variables) if u is v][0]
            expected = before[i] - group.base_lr * (grads[i] + wd * before[i])
            np.testing.assert_allclose(v.numpy(), expected, atol=1e-6, rtol=1e-4, err_msg=group.name)


def test_schedule_factors():
    from dmltf.training.optim import schedule_factor

    cfg = config.make(epochs=10, schedule="cosine")
    assert [round(schedule_factor(cfg, e), 6) for e in (0, 5, 10)] == [1.0, 0.5, 0.0]
    cfg = config.make(schedule="multistep", lr_milestones=["2", "5"], lr_gamma=0.1)
    assert [round(schedule_factor(cfg, e), 6) for e in (0, 1.9, 2, 4.5, 5, 9)] == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    cfg = config.make(schedule="step", lr_step_size=3, lr_gamma=0.5, lr_warmup_epochs=2.0)
    assert schedule_factor(cfg, 0.5) == pytest.approx(0.25) and schedule_factor(cfg, 1.0) == pytest.approx(0.5)
    assert schedule_factor(cfg, 2) == 1.0 and schedule_factor(cfg, 3) == 0.5
    with pytest.raises(ValueError, match="valid: constant, step, multistep, cosine"):
        schedule_factor(config.make(schedule="exp"), 0)


@pytest.mark.parametrize("protocol", ["stratified", "zero_shot"])
def test_digits_protocols(protocol):
    train, test = builders.load_digits_splits(protocol)
    assert train.num_examples + test.num_examples == 1797 and train.image_shape == (8, 8, 1)
    if protocol == "zero_shot":
        assert set(train.labels) == {0, 1, 2, 3, 4} and set(test.labels) == {5, 6, 7, 8, 9}
    else:
        assert set(train.labels) == set(test.labels) == set(range(10))
        counts = np.bincount(train.labels) - np.bincount(test.labels)
        assert np.abs(counts).max() <= 1  # a stratified half of every class


def test_split_images_fetches_only_the_rows_asked_for(tmp_path):
    from dmltf.training.trainer import split_images

    rng = np.random.default_rng(0)
    small, large = rng.integers(0, 255, (20, 30, 3), np.uint8), rng.integers(0, 255, (40, 24, 3), np.uint8)
    path = str(tmp_path / "jpeg.h5")
    with data.DatasetWriter(path, format="hdf5", encoding="jpeg", class_names=["a", "b"]) as w:
        w.begin_split("test", num_examples=2)
        w.add(small, 0)
        w.add(large, 1)
        w.end_split()
    got = split_images(data.open_dataset(path).split("test"), size=16)([1, 0, 1])
    assert got.shape == (3, 16, 16, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], got[2])
    images = rng.integers(0, 255, (5, 8, 8, 1), np.uint8)
    np.testing.assert_array_equal(split_images(data.ArraySplit(images, np.arange(5)))([4, 2]), images[[4, 2]])
