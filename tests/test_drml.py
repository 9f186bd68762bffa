"""DRML (dmltf/methods/drml.py) against a numpy float64 reference written here from METHODS.md 3.3
and the official RelationEmbedder / MultiEmbedder / GeDML ProxyAnchorLoss, and its flagfiles end to end."""
import glob
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import config
from recipes import flagfile_flags, run_script
from dmltf import losses
from dmltf.methods.drml import DRML, RelationEmbedder, build_drml_models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D, F = 4, 3, 32  # branches, node width, trunk feature width (chunks of 8)
ALPHA, MARGIN = 32.0, 0.1

BATCHES = {  # the four batch kinds of the loss tests
    "balanced": np.array([0, 0, 1, 1, 2, 2, 3, 3]),
    "ragged_singletons": np.array([0, 0, 0, 1, 2, 2, 3]),
    "one_class": np.array([2, 2, 2, 2, 2]),
    "all_distinct": np.array([0, 1, 2, 3, 4]),
}
NUM_CLASSES = 5


# ----------------------------------------------------------------------------- numpy reference
def np_normalize(x, p=2):
    norm = np.sum(np.abs(x) ** p, axis=-1, keepdims=True) ** (1.0 / p)
    return x / np.maximum(norm, 1e-12)


def np_relation(h, w, relational=True):
    """(nodes [B, N, d], errors [B, N], z [B, N d]) from the official forward, one branch at a time."""
    chunks = np.split(h, N, axis=1)
    nodes, errors = [], []
    for n in range(N):
        v = chunks[n] @ w["node_kernel"][n] + w["node_bias"][n]
        nodes.append(np_normalize(v) if relational else v)
        target = chunks[n] if relational else h
        rebuilt = nodes[n] @ w["decoder_kernel"][n] + w["decoder_bias"][n]
        errors.append(np.mean((rebuilt - target) ** 2, axis=1))
    nodes, errors = np.stack(nodes, 1), np.stack(errors, 1)
    if not relational:
        return nodes, errors, nodes.reshape(len(h), -1)
    a = np.stack([chunks[n] @ w["edge_a_kernel"][n] + w["edge_a_bias"][n] for n in range(N)], 1)
    b = np.stack([chunks[n] @ w["edge_b_kernel"][n] + w["edge_b_bias"][n] for n in range(N)], 1)
    z = []
    for row in range(len(h)):
        s = np.zeros((N, N))
        for i in range(N):
            for j in range(N):
                s[i, j] = max(0.0, (a[row, i] - b[row, j]) @ w["score_kernel"][:, 0] + w["score_bias"][0])
        s = s / np.maximum(s.sum(axis=0, keepdims=True), 1e-12)  # column j over i
        out = []
        for j in range(N):
            u = sum(s[i, j] * nodes[row, i] for i in range(N))
            out.append(np.concatenate([nodes[row, j], u]) @ w["integrator_kernel"] + w["integrator_bias"])
        z.append(np.concatenate(out))
    return nodes, errors, np.array(z)


def np_proxy_anchor(x, labels, proxies):
    """GeDML's ProxyAnchorLoss on cosine similarities; an empty batch gives 0."""
    if len(x) == 0:
        return 0.0
    cos = np_normalize(x) @ np_normalize(proxies).T
    pos_mask = labels[:, None] == np.arange(len(proxies))[None]
    pos_terms, neg_terms = [], []
    for p in range(len(proxies)):
        pos, neg = cos[pos_mask[:, p], p], cos[~pos_mask[:, p], p]
        if len(pos):
            pos_terms.append(np.log1p(np.sum(np.exp(-ALPHA * (pos - MARGIN)))))
        neg_terms.append(np.log1p(np.sum(np.exp(ALPHA * (neg + MARGIN)))))
    return (np.mean(pos_terms) if pos_terms else 0.0) + np.mean(neg_terms)


# ----------------------------------------------------------------------------- fixtures
def identity_trunk():
    """features -> features, with the layer names DRML reads (``backbone``)."""
    inputs = keras.Input((F,), name="images")
    return keras.Model(inputs, keras.layers.Identity(name="backbone")(inputs), name="feature_model")


def make_drml(relational=True, randomise=True, seed=0):
    keras.utils.set_random_seed(seed)
    feature_model, embedder, embedding_model = build_drml_models(identity_trunk(), branches=N, embedding_dim=N * D,
                                                                 relational=relational)
    branch = [losses.get("proxy_anchor", num_classes=NUM_CLASSES, embedding_dim=D, alpha=ALPHA, margin=MARGIN)
              for _ in range(N)]
    repre = losses.get("proxy_anchor", num_classes=NUM_CLASSES, embedding_dim=N * D, alpha=ALPHA, margin=MARGIN)
    drml = DRML(feature_model, embedder, embedding_model, branch, repre, embedder="relational" if relational else "multi",
                repre_weight=10.0, recon_weight=0.7)
    drml(np.zeros((2, F), "float32"))
    for loss in [*branch, repre]:
        loss(np.array([0, 1]), np.ones((2, loss.proxies.shape[1]), "float32"))  # builds the proxies
    if randomise:  # away from the [I, 0] start, so that the messages matter
        rng = np.random.default_rng(seed)
        for v in embedder.weights:
            v.assign(rng.normal(scale=0.5, size=v.shape).astype("float32"))
    return drml


def weights_of(embedder):
    return {v.name: np.asarray(v, np.float64) for v in embedder.weights}


def features_for(labels, seed=1):
    return np.random.default_rng(seed).normal(size=(len(labels), F)).astype("float32")


# ----------------------------------------------------------------------------- the module
@pytest.mark.parametrize("relational", [True, False], ids=["relational", "multi"])
def test_embedder_forward_matches_numpy(relational):
    drml = make_drml(relational)
    h = features_for(BATCHES["balanced"])
    nodes, errors, z = (np.asarray(t) for t in drml.embedder(h))
    ref_nodes, ref_errors, ref_z = np_relation(h.astype(np.float64), weights_of(drml.embedder), relational)
    np.testing.assert_allclose(nodes, ref_nodes, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(errors, ref_errors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z, ref_z, rtol=1e-5, atol=1e-5)
    # The exported model is z, L2-normalised.
    np.testing.assert_allclose(np.asarray(drml.embed(h)), np_normalize(ref_z), rtol=1e-5, atol=1e-6)


def test_at_initialisation_the_embedding_is_the_concatenated_nodes():
    drml = make_drml(randomise=False)
    h = features_for(BATCHES["balanced"])
    nodes, _, z = (np.asarray(t) for t in drml.embedder(h))
    assert np.abs(z).max() > 0.1
    np.testing.assert_allclose(z, nodes.reshape(len(h), -1), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(drml.embedder.integrator_kernel), np.vstack([np.eye(D), np.zeros((D, D))]))


def test_initialisers_follow_the_reference():
    """kaiming_normal(fan_out) of torch Linear weights: std sqrt(2 / out); DRML's branch proxies
    kaiming_normal(a = sqrt 5, fan_in): std sqrt(2 / 6) / sqrt(dim)."""
    keras.utils.set_random_seed(0)
    embedder = RelationEmbedder(branches=4, node_dim=128)
    embedder.build((None, 1024))
    assert np.std(np.asarray(embedder.node_kernel)) == pytest.approx(math.sqrt(2 / 128), rel=0.02)
    assert np.std(np.asarray(embedder.decoder_kernel)) == pytest.approx(math.sqrt(2 / 256), rel=0.02)
    assert np.std(np.asarray(embedder.edge_a_kernel)) == pytest.approx(math.sqrt(2 / 128), rel=0.02)
    assert np.abs(np.asarray(embedder.node_bias)).max() == 0
    proxies = losses.get("proxy_anchor", num_classes=2000, embedding_dim=128, initializer="kaiming_normal_a_sqrt5")
    proxies(np.array([0]), np.ones((1, 128), "float32"))
    assert np.std(np.asarray(proxies.proxies)) == pytest.approx(math.sqrt(2 / 6) / math.sqrt(128), rel=0.02)


def test_a_trunk_feature_that_does_not_split_is_refused():
    with pytest.raises(ValueError, match="not a multiple of 3"):
        RelationEmbedder(branches=3, node_dim=4).build((None, 32))
    with pytest.raises(ValueError, match="--embedding_dim=10"):
        build_drml_models(identity_trunk(), branches=4, embedding_dim=10)


# ----------------------------------------------------------------------------- the losses
@pytest.mark.parametrize("relational", [True, False], ids=["relational", "multi"])
@pytest.mark.parametrize("kind", list(BATCHES))
def test_each_loss_term_matches_numpy(kind, relational):
    labels = BATCHES[kind]
    drml = make_drml(relational)
    h = features_for(labels)
    out = {k: float(v) for k, v in drml.compute_losses((h, labels)).items()}
    nodes, errors, z = np_relation(h.astype(np.float64), weights_of(drml.embedder), relational)
    assigned = np.argmin(errors, axis=1)
    expected_total = 0.0
    for n, loss in enumerate(drml.branch_losses):
        mine = assigned == n
        branch = np_proxy_anchor(nodes[mine, n], labels[mine], np.asarray(loss.proxies, np.float64))
        assert out[f"branch_{n + 1}"] == pytest.approx(branch, rel=1e-4, abs=1e-5), n
        assert out[f"share_branch_{n + 1}"] == pytest.approx(mine.mean())
        expected_total += branch
    repre = np_proxy_anchor(z, labels, np.asarray(drml.repre_loss.proxies, np.float64))
    assert out["repre"] == pytest.approx(repre, rel=1e-4, abs=1e-5)
    assert out["recon"] == pytest.approx(errors.mean(), rel=1e-5)
    assert out["loss"] == pytest.approx(expected_total + 10.0 * repre + 0.7 * errors.mean(), rel=1e-4)


def test_a_branch_without_samples_contributes_zero():
    drml = make_drml()
    drml.embedder.decoder_bias.assign(np.array([[100.0] * 8, [0.0] * 8, [0.0] * 8, [0.0] * 8], "float32"))
    labels = BATCHES["balanced"]
    out = drml.compute_losses((features_for(labels), labels))
    assert float(out["share_branch_1"]) == 0.0 and float(out["branch_1"]) == 0.0
    assert float(out["branch_2"]) + float(out["branch_3"]) + float(out["branch_4"]) > 0


# ----------------------------------------------------------------------------- gradient paths
def _gradients(drml, key, labels, h):
    variables = drml.trainable_variables
    with tf.GradientTape() as tape:
        value = drml.compute_losses((h, labels))[key]
    return dict(zip([v.path for v in variables], tape.gradient(value, variables)))


def test_the_reconstruction_trains_only_the_decoders():
    drml = make_drml()
    labels = BATCHES["ragged_singletons"]
    grads = _gradients(drml, "recon", labels, features_for(labels))
    decoder = {v.path for v in drml.embedder.decoder_variables}
    for path, g in grads.items():
        if path in decoder:
            assert g is not None and np.abs(np.asarray(g)).max() > 0, path
        else:
            assert g is None or np.abs(np.asarray(g)).max() == 0, path


def test_edge_features_carry_no_gradient_into_the_trunk():
    """With the node maps zeroed the nodes are constants, so z depends on the trunk feature only
    through the edges: their stop-gradient leaves the feature no gradient, while the edge
    weights still learn."""
    drml = make_drml()
    drml.embedder.node_kernel.assign(np.zeros(drml.embedder.node_kernel.shape, "float32"))
    h = tf.constant(features_for(BATCHES["balanced"]))
    probe = tf.constant(np.random.default_rng(3).normal(size=(len(h), N * D)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(h)
        z = drml.embedder(h)[2]
        value = tf.reduce_sum(z * probe)
    assert np.abs(np.asarray(tape.gradient(value, h))).max() == 0
    assert np.abs(np.asarray(tape.gradient(value, drml.embedder.edge_a_kernel))).max() > 0
    assert np.abs(np.asarray(tape.gradient(value, drml.embedder.score_kernel))).max() > 0


@pytest.mark.parametrize("kind", ["balanced", "ragged_singletons"])
def test_branch_proxies_learn_only_from_their_assigned_samples(kind):
    """The gradient of the total loss on branch n's proxies is that of ProxyAnchor on branch n's
    assigned samples alone (the same loss object called on the subset)."""
    labels = BATCHES[kind]
    drml = make_drml()
    h = features_for(labels)
    nodes, errors, _ = (np.asarray(t) for t in drml.embedder(h))
    assigned = np.argmin(errors, axis=1)
    proxies = [loss.proxies for loss in drml.branch_losses]
    with tf.GradientTape(persistent=True) as tape:
        total = drml.compute_losses((h, labels))["loss"]
        alone = [loss(labels[assigned == n], nodes[assigned == n, n]) for n, loss in enumerate(drml.branch_losses)]
    assert len(set(assigned)) > 1  # several branches in use
    for n, proxy in enumerate(proxies):
        got = np.asarray(tape.gradient(total, proxy))
        want = tape.gradient(alone[n], proxy)
        want = np.zeros(proxy.shape) if want is None else np.asarray(want)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7, err_msg=f"branch {n}")
        for m, other in enumerate(proxies):  # and nothing from another branch's loss
            if m != n:
                g = tape.gradient(alone[n], other)
                assert g is None or np.abs(np.asarray(g)).max() == 0


# ----------------------------------------------------------------------------- groups and flags
def test_optimizer_groups_split_trunk_embedder_decoders_and_proxies():
    from dmltf.training import builders

    cfg = config.make(method="drml", backbone="small_cnn", embedding_dim=16, drml_branches=4)
    drml = builders.build_method(cfg, builders.DatasetInfo(num_classes=3, input_shape=(8, 8, 1)))
    groups = {g.name: g for g in drml.optimizer_groups()}
    assert list(groups) == ["backbone", "embedder", "decoder", "ensemble", "repre"]
    ids = lambda vs: {id(v) for v in vs}  # noqa: E731
    assert ids(groups["decoder"].variables) == ids(drml.embedder.decoder_variables)
    assert ids(groups["ensemble"].variables) == ids(v for loss in drml.branch_losses for v in loss.trainable_variables)
    assert ids(groups["repre"].variables) == ids(drml.repre_loss.trainable_variables)
    every = [v for g in groups.values() for v in g.variables]
    assert len(every) == len(ids(every)) == len(ids(drml.trainable_variables))
    # The branch role: 4-d proxies (16 / 4) with the reference's initialiser.
    assert [loss.proxies.shape[1] for loss in drml.branch_losses] == [4] * 4
    assert [loss.get_config()["initializer"] for loss in drml.branch_losses] == ["kaiming_normal_a_sqrt5"] * 4


def test_unknown_embedder_is_refused():
    from dmltf.training import builders

    cfg = config.make(method="drml", backbone="small_cnn", embedding_dim=16, drml_embedder="graph")
    with pytest.raises(ValueError, match="--drml_embedder must be one of relational, multi"):
        builders.build_method(cfg, builders.DatasetInfo(num_classes=3, input_shape=(8, 8, 1)))


# ----------------------------------------------------------------------------- flagfiles end to end
FLAGFILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "train", "configs", "drml_*.cfg")))
# (flagfile -> the learning rate of each group in the second of two epochs)
RATES = {
    "drml_{}.cfg": {"backbone": 5e-5, "embedder": 1e-3, "decoder": 1e-3, "ensemble": 1e-2, "repre": 1e-2},
    "drml_{}_baseline.cfg": {"backbone": 1e-4, "head": 1e-4, "loss": 1e-2},
    # StepLR with step 1 from the first epoch: the second runs at half the rate.
    "drml_{}_seed.cfg": {"backbone": 5e-6, "embedder": 5e-5, "decoder": 5e-5, "ensemble": 5e-3, "repre": 5e-3},
}
DRML_TAGS = ["train/branch_1", "train/branch_4", "train/share_branch_1", "train/share_branch_4", "train/repre",
             "train/recon", "train/loss", "eval/recall@1", "eval/recall@8", "eval/nmi"]


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    """A miniature DRML folder tree <root>/cub200/{train,test}/<class>/*.jpg, converted with the
    class-folder converter to the HDF5 the flagfiles read."""
    from PIL import Image

    from dmltf.data.raw import folder

    root = tmp_path_factory.mktemp("drml") / "cub200"
    rng = np.random.default_rng(0)
    for split, classes in (("train", range(0, 3)), ("test", range(3, 6))):
        for c in classes:
            os.makedirs(root / split / f"{c:03d}")
            for i in range(4):
                pixels = (rng.uniform(size=(40, 48, 3)) * 60 + c * 30).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"{c:03d}" / f"{i}.jpg")
    output = root.parent / "cub200.hdf5"
    assert folder.main(["--root", str(root), "--output", str(output), "--resize", "none"]) in (0, None)
    return str(output)


def _read_tags(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


OVERRIDES = dict(backbone="small_cnn", backbone_weights="", embedding_dim=16, epochs=2, max_steps_per_epoch=2,
                 image_size=32, classes_per_batch=2, samples_per_class=4, progress="none", export=False,
                 tb_neighbours=0, tb_projector_points=0, eval_every=1)


@pytest.mark.parametrize("flagfile", FLAGFILES)
def test_flagfile_runs_end_to_end(flagfile, folder_dataset, tmp_path):
    from dmltf.training.experiment import run

    assert len(FLAGFILES) == 6
    flags = flagfile_flags(flagfile)
    cfg = config.make(**{**flags, **OVERRIDES, "dataset": folder_dataset, "logdir": str(tmp_path / "run")})
    trainer, rows = run(cfg)
    assert 0 <= rows[-1][1]["recall@1"] <= 1
    acc = _read_tags(tmp_path / "run")
    tags = set(acc.Tags()["tensors"])
    for tag in (DRML_TAGS if cfg.method == "drml" else ["train/loss", "eval/recall@1"]):
        assert tag in tags, tag
    rates = RATES[flagfile.replace("cub200", "{}").replace("cars196", "{}")]
    got = {g: float(tf.make_ndarray(acc.Tensors(f"learning_rate/{g}")[-1].tensor_proto)) for g in rates}
    assert got == pytest.approx(rates)
    if cfg.method == "drml":
        shares = [float(tf.make_ndarray(acc.Tensors(f"train/share_branch_{n}")[-1].tensor_proto)) for n in range(1, 5)]
        assert sum(shares) == pytest.approx(1.0)


def test_the_command_line_runs_the_drml_flagfile(folder_dataset, tmp_path):
    """train/main.py parses the flagfile itself (absl types: bools, lists) and exports the model."""
    done = run_script(os.path.join(REPO, "train", "main.py"),
                      "--flagfile=" + os.path.join(REPO, "train", "configs", "drml_cub200.cfg"),
                      f"--dataset={folder_dataset}", f"--logdir={tmp_path / 'run'}",
                      *[f"--{k}={v}" for k, v in OVERRIDES.items()], "--epochs=1", "--export=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "recall@1" in done.stdout and "exported to" in done.stdout  # .keras and SavedModel
    assert "train/share_branch_2" in set(_read_tags(tmp_path / "run").Tags()["tensors"])


def test_the_embedding_model_saves_and_loads(tmp_path):
    drml = make_drml()
    h = features_for(BATCHES["balanced"])
    path = str(tmp_path / "drml.keras")
    drml.embedding_model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(h)), np.asarray(drml.embed(h)), rtol=1e-6, atol=1e-7)
