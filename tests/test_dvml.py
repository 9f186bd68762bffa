"""DVML: loss terms and the seed's objectives against numpy (float64, written from METHODS.md 1.2 /
1.4), gradient cut-off per phase, phase switch across a kill and resume, the four Cars196 flagfiles
end to end on a miniature Cars196 in the DVML layout (the reference one at its own length), the
DVML-layout reader and random batches; issue 19: paper mode's heads, decoder and metric losses as
GeDML's, the dvml preset's eval crop and the reference flagfile's length and evaluation as the seed's.
Budget: ~3 min.
"""
import json
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import config
import raw_datasets as raw
from recipes import run_script
from dmltf import data, losses
from dmltf.data.raw import cars196
from dmltf.data.samplers.shuffled import random_batches
from dmltf.methods.dvml import DVML, build_encoder
from dmltf.training.experiment import build_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E, T, SEED = 4, 3, 7
LAMBDAS = {1: (1.0, 1.0, 0.1, 1.0), 2: (0.8, 1.0, 0.2, 0.8)}


# -- independent numpy references ---------------------------------------------------------------
def semihard_triplet(labels, x, margin=1.0):
    """TF-contrib triplet_semihard_loss, re-written with loops (squared euclidean, raw x)."""
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    total, count = 0.0, 0
    for a in range(len(x)):
        negatives = [d[a, n] for n in range(len(x)) if labels[n] != labels[a]]
        for p in range(len(x)):
            if p == a or labels[p] != labels[a] or not negatives:
                continue
            farther = [v for v in negatives if v > d[a, p]]
            d_an = min(farther) if farther else max(negatives)
            total += max(0.0, margin + d[a, p] - d_an)
            count += 1
    return total / count if count else 0.0


def batchnorm(h, layer, training):
    gamma, beta, mean, var = (np.asarray(w, np.float64) for w in layer.get_weights())
    if training:
        mean, var = h.mean(0), h.var(0)
    return gamma * (h - mean) / np.sqrt(var + layer.epsilon) + beta


def dense(h, layer):
    w, b = (np.asarray(v, np.float64) for v in layer.get_weights())
    return h @ w + b


def numpy_dvml(method, mode, phase, x, mu, log_var, z_inv, eps, labels, recon_reduction="mean"):
    """METHODS.md 1.2 (paper) / 1.4 (reference), on the network outputs of one batch."""
    b = len(labels)
    lam = LAMBDAS[phase]
    z = z_inv[None] + mu[None] + np.exp(0.5 * log_var)[None] * eps  # [T, B, E]
    h = dense(z.reshape(-1, E), method.decoder_hidden)
    if mode == "paper":  # GeDML's Linear -> BN (batch statistics) -> ReLU, then the same again
        h = np.maximum(batchnorm(h, method.decoder_bn, True), 0)
    else:  # the seed's Linear -> ReLU -> BN (inference in phase 1, batch statistics in phase 2) -> Linear
        h = batchnorm(np.maximum(h, 0), method.decoder_bn, phase == 2)
    x_hat = dense(h, method.decoder_out)
    if mode == "paper":  # GeDML's second BatchNormLayer: Linear -> BN -> ReLU
        x_hat = np.maximum(batchnorm(x_hat, method.decoder_out_bn, True), 0)
    x_hat = x_hat.reshape(len(eps), b, -1)
    sq = ((x_hat - x[None]) ** 2).sum(-1)
    kl_i = -0.5 * (1 + log_var - mu**2 - np.exp(log_var)).sum(1)
    terms = {"synthetic": semihard_triplet(labels, z[0]), "invariant": semihard_triplet(labels, z_inv)}
    if mode == "paper":
        # GeDML's F.mse_loss over [T, B, F]; the per-sample squared norm; the paper's printed (unsquared) norm.
        per_sample = {"mean": sq / x.shape[-1], "sample_sum": sq, "norm": np.sqrt(sq)}[recon_reduction]
        terms.update(kl=kl_i.mean(), recon=per_sample.sum() / (len(eps) * b))
        terms["loss"] = lam[0] * terms["kl"] + lam[1] * terms["recon"] + lam[2] * terms["synthetic"] + lam[3] * terms["invariant"]
        return terms
    # main.py: kl = sum_j(...) * -(0.5 / B), then K.mean over the batch; L2 = 1/(20 B) sum of squares.
    terms.update(kl=np.mean((1 + log_var - mu**2 - np.exp(log_var)).sum(1) * -(0.5 / b)), recon=sq.sum() / (20 * b))
    # wd: 5e-3 * l2_loss over the encoder's variables outside BatchNorm layers (names bn*, feature_bn).
    decayed = [v for v in method.encoder.trainable_variables if "bn" not in v.path.split("/")[-2]]
    terms["weight_decay"] = 5e-3 * sum(0.5 * (np.asarray(v, np.float64) ** 2).sum() for v in decayed)
    has_pair = any(labels[i] == labels[j] for i in range(b) for j in range(b) if i != j)
    encoder = lam[0] * terms["kl"] + lam[2] * terms["synthetic"] + lam[3] * (terms["invariant"] + terms["weight_decay"])
    terms["encoder_loss"] = encoder if has_pair else 0.0  # the seed's NaN (0 / 0 positives) -> 0
    terms["decoder_loss"] = lam[1] * terms["recon"]
    logits = dense(x, method.classifier)
    logits = logits - logits.max(1, keepdims=True)
    terms["classifier_loss"] = float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(b), labels]))
    return terms


# -- fixtures -----------------------------------------------------------------------------------
def make_dvml(mode, **kwargs):
    keras.utils.set_random_seed(0)
    encoder, embedding_model = build_encoder("small_cnn", (8, 8, 1), E, mode=mode)
    loss = kwargs.pop("metric_loss", None) or losses.get("triplet", margin=1.0, miner="semi_hard",
                                                         distance="squared_euclidean")
    return DVML(encoder, embedding_model, loss, num_classes=4, mode=mode, num_samples=T if mode == "paper" else 0,
                decoder_units=6, seed=SEED, **kwargs)


def fixed_batch(labels):
    rng = np.random.default_rng(3)
    return rng.uniform(0, 1, (len(labels), 8, 8, 1)).astype("float32"), np.asarray(labels, np.int64)


# Classes of 3 and 2, a singleton (an anchor without positives), then all labels distinct.
MIXED, DISTINCT = [0, 0, 0, 1, 1, 2, 3, 1], [0, 1, 2, 3]


@pytest.mark.parametrize("mode,recon_reduction", [("paper", "mean"), ("paper", "sample_sum"), ("paper", "norm"),
                                                 ("reference", "mean")])
@pytest.mark.parametrize("phase", [1, 2])
def test_loss_terms_match_numpy(mode, recon_reduction, phase):
    method = make_dvml(mode, recon_reduction=recon_reduction)
    # Perturb the decoder BN's moving statistics and affine weights so inference vs batch mode matters.
    rng = np.random.default_rng(1)
    method.decoder_bn.set_weights([rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.1, 6), rng.normal(0, 0.5, 6),
                                   rng.uniform(0.5, 2.0, 6)])
    if mode == "paper":
        f = method.decoder_out.units
        method.decoder_out_bn.set_weights([rng.uniform(0.5, 1.5, f), rng.normal(0, 0.1, f), rng.normal(0, 0.5, f),
                                           rng.uniform(0.5, 2.0, f)])
    method.on_epoch_begin(phase - 1)  # phase1_epochs = 1
    for labels in (MIXED, DISTINCT):
        images, y = fixed_batch(labels)
        x, mu, log_var, z_inv = (np.asarray(t, np.float64) for t in method.encoder(images, training=True))
        step = int(method.train_steps.numpy())
        samples = T if mode == "paper" else 1
        eps = tf.random.stateless_normal((samples, len(y), E), tf.constant([SEED, step], tf.int64)).numpy()
        want = numpy_dvml(method, mode, phase, x, mu, log_var, z_inv, eps.astype(np.float64), y, recon_reduction)
        got = method.compute_losses((images, y), training=True)
        for key, value in want.items():
            np.testing.assert_allclose(float(got[key]), value, rtol=2e-4, atol=1e-5, err_msg=f"{key} {labels}")
        for i, lam in enumerate(LAMBDAS[phase]):
            assert float(got[f"lambda{i + 1}"]) == pytest.approx(lam)
        assert float(got["phase"]) == phase
        if mode == "reference":
            total = want["encoder_loss"] + want["decoder_loss"] + want["classifier_loss"]
            np.testing.assert_allclose(float(got["loss"]), total, rtol=2e-4)
    if mode == "reference":
        assert want["encoder_loss"] == 0.0 and float(got["encoder_loss"]) == 0.0  # DISTINCT: no positive pair


@pytest.mark.parametrize("mode,phase,reaches", [("paper", 1, False), ("paper", 2, True),
                                                ("reference", 1, False), ("reference", 2, False)])
def test_reconstruction_gradient_reaches_the_encoder_only_in_paper_phase_2(mode, phase, reaches):
    method = make_dvml(mode)
    method.on_epoch_begin(phase - 1)
    images, y = fixed_batch(MIXED)
    with tf.GradientTape() as tape:
        recon = method.compute_losses((images, y), training=True)["recon"]
    grads = tape.gradient(recon, method.encoder.trainable_variables)
    largest = max(0.0 if g is None else float(np.abs(g).max()) for g in grads)
    if reaches:
        assert largest > 1e-6
    else:
        assert largest == 0.0


def small_cfg(tmp_path, **overrides):
    base = dict(dataset="digits", digits_protocol="zero_shot", method="dvml", backbone="small_cnn", embedding_dim=8,
                classes_per_batch=5, samples_per_class=4, epochs=2, max_steps_per_epoch=2, eval_every=0,
                progress="none", export=False, logdir=str(tmp_path), tb_neighbours=0, tb_projector_points=0,
                eval_metrics=["map@r"], optimizer="adam", lr=1e-3, weight_decay=0.0, loss="triplet",
                miner="semi_hard", distance="squared_euclidean", loss_triplet_margin=1.0, dvml_num_samples=0,
                dvml_decoder_units=16)
    base.update(overrides)
    return config.make(**base)


def state(trainer):
    return ([v.numpy().copy() for v in trainer.method.variables]
            + [v.numpy().copy() for g in trainer.groups for v in g.optimizer.variables])


@pytest.mark.parametrize("extra", [dict(dvml_mode="paper", dvml_phase1_steps=3),
                                   dict(dvml_mode="reference", dvml_phase1_epochs=1, batch_sampler="random")])
def test_phase_switch_survives_kill_and_resume(tmp_path, extra):
    full = build_trainer(small_cfg(tmp_path / "full", **extra))
    full.fit()
    assert int(full.method.phase.numpy()) == 2
    first = build_trainer(small_cfg(tmp_path / "resumed", epochs=1, **extra))
    first.fit()
    assert int(first.method.phase.numpy()) == 1
    del first  # the "killed" process
    resumed = build_trainer(small_cfg(tmp_path / "resumed", resume=True, **extra))
    resumed.fit()
    assert int(resumed.method.train_steps.numpy()) == int(full.method.train_steps.numpy()) == 4
    for a, b in zip(state(full), state(resumed)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


# -- data: the DVML layout and random batches ------------------------------------------------------
@pytest.fixture(scope="module")
def dvml_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("cars")
    raw.make_cars_car_ims(str(root / "raw"), per_class=4)  # classes 1, 2, 98 | 99, 100, 196
    out = root / "cars196.hdf5"
    assert cars196.main(["--root", str(root / "raw"), "--output", str(out), "--layout", "dvml",
                         "--resample", "bilinear"]) == 0
    return out


def test_dvml_layout_reader_gives_fuel_splits_as_stored(dvml_file):
    ds = data.open_dataset(str(dvml_file))
    assert ds.split_names == ["test", "train"]
    with h5py.File(dvml_file, "r") as f:
        images, targets = f["images"][:], f["targets"][:, 0]
        rows = {(r["split"].decode(), r["source"].decode()): (r["start"], r["stop"]) for r in f.attrs["split"]}
    for name in ("train", "test"):
        start, stop = rows[(name, "images")]
        split = ds.split(name)
        np.testing.assert_array_equal(split.labels, targets[start:stop])
        assert split.image_shape == (256, 256, 3) and split.num_examples == stop - start == 12
        np.testing.assert_array_equal(split.read(0, split.num_examples), images[start:stop].transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(split.read_rows([5, 1, 5]), images[start:stop][[5, 1, 5]].transpose(0, 2, 3, 1))
    assert ds.split("train").class_ids.tolist() == [1, 2, 98] and ds.split("test").class_ids.tolist() == [99, 100, 196]


def test_random_batches_are_a_shuffle_of_the_epoch():
    a = random_batches(10, 3, seed=0, epoch=0)
    assert a.shape == (3, 3) and len(set(a.ravel())) == 9 and a.max() < 10
    np.testing.assert_array_equal(a, random_batches(10, 3, seed=0, epoch=0))
    assert not np.array_equal(a, random_batches(10, 3, seed=0, epoch=1))
    with pytest.raises(ValueError, match="batch_size"):
        random_batches(4, 5, seed=0, epoch=0)
    labels = np.array([3, 3, 5, 5, 5, 9, 9, 9, 9, 9])
    split = data.ArraySplit(np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(2, 1).repeat(2, 2), labels)
    got = [(np.round(x.numpy()[:, 0, 0, 0] * 255), y.numpy()) for x, y in data.train_dataset(split, data.samplers.get("random", 3, 1), seed=0, epoch=0)]
    for (pixels, y), idx in zip(got, a):  # pixel value = row index (preprocessing "none" scales by 1/255)
        np.testing.assert_array_equal(pixels, idx)
        np.testing.assert_array_equal(y, np.searchsorted([3, 5, 9], labels[idx]))


SHARED_TAGS = ["train/kl", "train/recon", "train/synthetic", "train/invariant", "train/phase", "train/lambda1",
               "train/lambda4", "learning_rate/decoder", "eval/recall@32", "eval/nmi", "eval/f1"]
SHORT = ["--epochs=2", "--max_steps_per_epoch=2"]
FLAGFILES = {  # flagfile -> (overrides for 3 train classes of 4 images, extra tags, learning rate per group)
    # The reference flagfile runs its own length: 2 epochs (the seed's 1 + 1) of 12 // 6 = 2 steps.
    "dvml_cars196_reference.cfg": (["--classes_per_batch=6"],
                                   ["train/encoder_loss", "train/decoder_loss", "train/classifier_loss"],
                                   {"backbone": 7e-5, "decoder": 1e-2, "classifier": 1e-3}),
    "dvml_cars196_paper.cfg": (["--classes_per_batch=3", "--dvml_phase1_epochs=1", *SHORT], ["train/loss"],
                               {"backbone": 1e-4, "head": 1e-4, "decoder": 1e-4}),
    "dvml_cars196_paper_semihard.cfg": (["--classes_per_batch=3", "--dvml_phase1_epochs=1", *SHORT], ["train/loss"],
                                        {"backbone": 1e-4, "head": 1e-4, "decoder": 1e-4}),
    "dvml_cars196_npair.cfg": (["--classes_per_batch=3", "--dvml_phase1_epochs=1", *SHORT], ["train/loss"],
                               {"backbone": 1e-4, "head": 1e-4, "decoder": 1e-4}),
}


@pytest.mark.parametrize("flagfile", list(FLAGFILES))
def test_flagfile_runs_end_to_end(flagfile, dvml_file, tmp_path):
    overrides, extra_tags, rates = FLAGFILES[flagfile]
    logdir = tmp_path / "run"
    done = run_script(os.path.join(REPO, "train", "main.py"),
                      "--flagfile=" + os.path.join(REPO, "train", "configs", flagfile), f"--dataset={dvml_file}",
                      "--backbone=small_cnn", "--backbone_weights=", f"--logdir={logdir}", "--progress=none",
                      "--export=false", "--tb_neighbours=0", "--tb_projector_points=0", "--image_size=64", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "recall@32" in done.stdout and "nmi" in done.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    for tag in SHARED_TAGS + extra_tags:
        assert tag in tags, tag
    phase = [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors("train/phase")]
    lambda3 = [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors("train/lambda3")]
    assert phase == [1.0, 2.0] and lambda3 == pytest.approx([0.1, 0.2])
    if flagfile == "dvml_cars196_reference.cfg":  # its own 2 epochs (phase 1 + phase 2) of 12 // 6 = 2 steps
        with open(logdir / "history.json") as f:
            assert [(r["epoch"], r["step"]) for r in json.load(f)] == [(1, 2), (2, 4)]
    got = {g: float(tf.make_ndarray(acc.Tensors(f"learning_rate/{g}")[-1].tensor_proto)) for g in rates}
    assert got == pytest.approx(rates)


@pytest.mark.parametrize("mode", ["paper", "reference"])
@pytest.mark.parametrize("loss", [dict(loss="proxy_anchor"), dict(loss="margin", loss_margin_learn_beta=True)])
def test_metric_loss_weights_train_with_the_encoder(tmp_path, mode, loss):
    """Proxies (and the margin loss's beta) get their own group, minimising the encoder's objective."""
    trainer = build_trainer(small_cfg(tmp_path, dvml_mode=mode, miner="", distance="", epochs=1,
                                      batch_sampler="random" if mode == "reference" else "balanced", **loss))
    loss_group = [g for g in trainer.method.optimizer_groups() if g.name == "loss"]
    assert len(loss_group) == 1 and loss_group[0].loss_key == ("encoder_loss" if mode == "reference" else "loss")
    weights = trainer.method.metric_loss.trainable_variables
    assert weights and all(any(w is v for v in loss_group[0].variables) for w in weights)
    before = [w.numpy().copy() for w in weights]
    trainer.fit()
    assert any(np.abs(w.numpy() - b).max() > 0 for w, b in zip(weights, before))


# -- issue 19: paper mode as GeDML (decoder, heads, metric loss) ----------------------------------
def _perturb_bn(layer, rng):
    n = layer.gamma.shape[0]
    layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.5, n), rng.uniform(0.5, 2.0, n)])


def test_paper_decoder_is_gedml_batchnorm_mlp():
    """GeDML dvml_decoder.yaml: BatchNormMLP [E, 512, F] with bn and relu true for both layers
    (mlp.py BatchNormLayer: Linear -> BN -> ReLU); the seed's (main.py L108-109) ends in a plain Dense."""
    rng = np.random.default_rng(5)
    paper, reference = make_dvml("paper"), make_dvml("reference")
    assert [type(l).__name__ for l in paper.decoder_layers()] == ["Dense", "BatchNormalization", "Dense",
                                                                  "BatchNormalization"]
    assert [type(l).__name__ for l in reference.decoder_layers()] == ["Dense", "BatchNormalization", "Dense"]
    for bn in (paper.decoder_bn, paper.decoder_out_bn):
        _perturb_bn(bn, rng)
    z = rng.normal(size=(7, E)).astype("float32")
    for training in (False, True):
        got = np.asarray(paper.decode(z, 2, training), np.float64)
        h = np.maximum(batchnorm(dense(z.astype(np.float64), paper.decoder_hidden), paper.decoder_bn, training), 0)
        want = np.maximum(batchnorm(dense(h, paper.decoder_out), paper.decoder_out_bn, training), 0)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert got.min() == 0.0  # ends in a ReLU
    # Every decoder layer trains in the decoder group.
    group = {g.name: g for g in paper.optimizer_groups()}["decoder"]
    assert {id(v) for v in group.variables} == {id(v) for l in paper.decoder_layers() for v in l.trainable_variables}


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_heads_read_the_raw_feature_in_paper_mode(mode):
    """GeDML: mu = embedder_mean(features), log_var = embedder_std(features) (dvml_collector.py L120-121),
    embeddings = embedder(features) (_default_global_collector.py L44-45), each a single Linear
    (dvml_embedder.yaml); the seed puts bn_block before its fc1-fc3 (main.py L81-89)."""
    method = make_dvml(mode)
    images, _ = fixed_batch(MIXED)
    x, *heads = (np.asarray(t, np.float64) for t in method.encoder(images, training=True))
    direct = [dense(x, method.encoder.get_layer(name)) for name in ("mu", "log_var", "invariance")]
    on_raw = all(np.allclose(d, h, rtol=1e-4, atol=1e-5) for d, h in zip(direct, heads))
    assert on_raw == (mode == "paper")
    assert any(l.name == "feature_bn" for l in method.encoder.layers) == (mode == "reference")
    other = "paper" if mode == "reference" else "reference"
    encoder, embedding_model = build_encoder("small_cnn", (8, 8, 1), E, mode=other)
    with pytest.raises(ValueError, match="feature_bn"):
        DVML(encoder, embedding_model, num_classes=4, mode=mode)


def flagfile_cfg(name, **overrides):
    """config.make from a flagfile's --key=value lines (as train/main.py reads them) and overrides."""
    values = {}
    with open(os.path.join(REPO, "train", "configs", name)) as f:
        for line in f:
            if line.startswith("--"):
                key, _, value = line.strip()[2:].partition("=")
                values[key] = value
    values.update(overrides)
    return config.make(**values)


def gedml_dense_triplet(labels, x, margin=1.0):
    """GeDML TripletLoss (triplet_loss.py L33-38) over DenseTripletSelector's triplets, on LpMetric
    distances of normalised inputs (euclid.yaml): the mean of the non-zero relu(d_ap - d_an + m)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    terms = [max(0.0, d[a, p] - d[a, n] + margin) for a in range(len(x)) for p in range(len(x))
             for n in range(len(x)) if a != p and labels[a] == labels[p] and labels[n] != labels[a]]
    nonzero = [t for t in terms if t > 0]
    assert 0 < len(nonzero) < len(terms)  # the batch tells "mean of the non-zero" from "mean of all"
    return float(np.mean(nonzero))


@pytest.mark.parametrize("flagfile,reference", [("dvml_cars196_paper.cfg", gedml_dense_triplet),
                                                ("dvml_cars196_paper_semihard.cfg", semihard_triplet)])
def test_paper_flagfiles_metric_loss(flagfile, reference):
    """dvml_cars196_paper.cfg's L_m is GeDML's (link_dvml.yaml); the _semihard flagfile keeps the seed's."""
    from dmltf.training.builders import build_loss

    assert flagfile_cfg(flagfile).loss_triplet_margin == 1.0
    # A smaller margin than the flagfile's 1 leaves some triplets of the untrained network at zero.
    cfg = flagfile_cfg(flagfile, loss_triplet_margin=0.2)
    margin = cfg.loss_triplet_margin
    method = make_dvml("paper", metric_loss=build_loss(cfg, None, 4, E), metric_l2_normalize=cfg.dvml_metric_l2_normalize)
    images, y = fixed_batch(MIXED)
    x, mu, log_var, z_inv = (np.asarray(t, np.float64) for t in method.encoder(images, training=True))
    eps = tf.random.stateless_normal((T, len(y), E), tf.constant([SEED, 0], tf.int64)).numpy()
    z_syn = z_inv + mu + np.exp(0.5 * log_var) * eps[0]
    got = method.compute_losses((images, y), training=True)
    np.testing.assert_allclose(float(got["invariant"]), reference(y, z_inv, margin), rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(float(got["synthetic"]), reference(y, z_syn, margin), rtol=2e-4, atol=1e-5)


def test_dvml_eval_crop_is_the_seeds_offset_15():
    """random_fixed_size_crop_mod.py L95-101: 256 -> 227 leaves 29 pixels; both margins odd, so the
    seed slices [15:-14] (offset 15), where a torchvision CenterCrop rounds 14.5 to 14."""
    from dmltf.data import augmentation

    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3)).astype(np.uint8)
    got = augmentation.get("dvml").eval(tf.constant(image)).numpy()
    np.testing.assert_array_equal(got, image[15:-14, 15:-14])
    # An even margin is split evenly, as the seed's: image_size 112 resizes to 126, offset 7.
    small = augmentation.get("dvml", image_size=112)
    resized = augmentation.resize(tf.constant(image), (126, 126)).numpy()
    np.testing.assert_array_equal(small.eval(tf.constant(image)).numpy(), resized[7:119, 7:119])


def test_reference_flagfile_length_and_evaluation_are_the_seeds():
    """main.py: 1 + 1 epochs ran (copy.copy of one Fuel epoch iterator per phase, L173-176, L227-230);
    evaluation every RECORD_STEP = 20 steps keeping the best NMI (L200, L219-222); NMI and F1 from
    scikit-learn 0.20.4's KMeans(n_clusters=98, random_state=1) defaults (lib/evaluation.py L20)."""
    cfg = flagfile_cfg("dvml_cars196_reference.cfg")
    assert (cfg.epochs, cfg.dvml_phase1_epochs) == (2, 1)
    assert (cfg.eval_every, cfg.eval_every_steps, cfg.best_metric) == (0, 20, "nmi")
    from dmltf.evaluation import clustering

    assert clustering.parse_kmeans(cfg.eval_kmeans) == (
        "sklearn", {"n_init": 10, "max_iter": 300, "tol": 1e-4, "algorithm": "elkan", "random_state": 1})
