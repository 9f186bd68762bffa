"""The shi510/dml-tf recipes and its TODO-list losses' official recipes (METHODS.md 4.1-4.3): the head
and pooling pieces they add (dmltf/layers.py) and the seed's [0, 1] inputs against numpy, the flagfiles'
losses against the formulas of the seed and of dml-tf HEAD, InceptionV3 from a Keras Applications notop
file, and every new flagfile end to end on a miniature dataset with the backbone overridden to small_cnn."""
import os

import h5py
import keras
import numpy as np
import pytest

import config
from recipes import flagfile_flags
from dmltf.data import preprocessing
from dmltf.layers import GlobalPooling, parse_pooling
from dmltf.models import backbones, build_embedding_model
from dmltf.training import builders

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "train", "configs")

# flagfile -> {optimizer group: (learning rate, Keras weight decay, L2 weight decay)}, from each reference.
# dml-tf HEAD's tfa AdamW decays w by 1e-4 a step whatever the rate (Keras: by lr x wd): wd = 1e-4 / lr.
SEED = {"backbone": (1e-4, 0.0, 0.0), "head": (1e-4, 0.0, 0.0), "loss": (1e-4, 0.0, 0.0)}
HEAD = {"backbone": (1e-4, 1.0, 0.0), "head": (1e-4, 1.0, 0.0), "loss": (1e-2, 0.01, 0.0)}
PROXY_ANCHOR = {"backbone": (1e-4, 1e-4, 0.0), "head": (1e-4, 1e-4, 0.0), "loss": (1e-2, 1e-4, 0.0)}
PROXY_NCA_PP = {"backbone": (4e-3, 0.0, 0.0), "head": (4e-3, 0.0, 0.0), "loss": (4e2, 0.0, 0.0)}
RECIPES = {
    "dmltf_proxynca_cub200.cfg": SEED, "dmltf_proxynca_cars196.cfg": SEED,
    "dmltf_proxynca_cub200_reference.cfg": SEED, "dmltf_proxynca_cars196_reference.cfg": SEED,
    "dmltf_proxynca_head_cub200.cfg": HEAD, "dmltf_proxynca_head_cars196.cfg": HEAD,
    "dmltf_proxyanchor_cub200.cfg": HEAD, "dmltf_proxyanchor_cars196.cfg": HEAD,
    "soft_triple_cars196.cfg": {"backbone": (1e-4, 0.0, 1e-4), "head": (1e-4, 0.0, 1e-4), "loss": (1e-2, 0.0, 1e-4)},
    "proxy_anchor_cub200.cfg": PROXY_ANCHOR, "proxy_anchor_cars196.cfg": PROXY_ANCHOR,
    "proxy_anchor_sop.cfg": {"backbone": (6e-4, 1e-4, 0.0), "head": (6e-4, 1e-4, 0.0), "loss": (6e-2, 1e-4, 0.0)},
    "proxy_nca_pp_cub200.cfg": PROXY_NCA_PP, "proxy_nca_pp_cars196.cfg": PROXY_NCA_PP,
    "adapted_triplet_cub200.cfg": {"backbone": (1e-4, 1e-4, 0.0), "head": (1e-4, 1e-4, 0.0)},
    "adapted_triplet_cars196.cfg": {"backbone": (1e-4, 1e-4, 0.0), "head": (1e-4, 1e-4, 0.0)},
}
# flagfile prefix -> (pooling mode, dropout, layernorm, embedding BatchNorm, L2 in the model)
HEADS = {"dmltf_proxynca_head": ("avg", 0.3, False, True, False), "dmltf_proxyanchor": ("avg", 0.3, False, True, False),
         "dmltf_proxynca": ("avg", 0.5, False, False, False), "soft_triple": ("avg", 0.0, False, False, True),
         "proxy_anchor": ("avg+max", 0.0, False, False, True), "proxy_nca_pp": ("max", 0.0, True, False, True),
         "adapted_triplet": ("avg+max", 0.0, False, False, True)}


def _head_of(flagfile):
    if flagfile.endswith("_reference.cfg"):  # the seed as it ran: its Dropout never dropped
        return ("avg", 0.0, False, False, False)
    return next(v for k, v in HEADS.items() if flagfile.startswith(k))


# ----------------------------------------------------------------------------- pooling pieces
def np_layernorm(f, eps=1e-5):
    """torch.nn.LayerNorm(C, elementwise_affine=False): biased variance over the channels."""
    mean = f.mean(axis=-1, keepdims=True)
    return (f - mean) / np.sqrt(f.var(axis=-1, keepdims=True) + eps)


def test_max_pooling_then_layernorm_without_affine_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5, 6)) * 3 + 1
    x[2] = 2.5  # a constant feature: zero variance, the output is 0 (eps keeps it finite)
    pool = GlobalPooling("max:layernorm=true")
    got = np.asarray(pool(x.astype("float32")))
    want = np_layernorm(x.max(axis=(1, 2)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(got[2]).max() == 0.0 and np.abs(want[:2]).max() > 0.5
    assert pool.weights == []  # no scale nor offset to learn


def test_dropout_acts_on_the_feature_map_before_average_pooling():
    """dml-tf's Dropout(0.5) -> GlobalAveragePooling2D: off at inference; in training each element of
    the map is 0 or x / (1 - rate), so the mean of a map of ones is k / (H W (1 - rate)) -- a dropout
    after the pooling would give only 0 or 2."""
    x = np.ones((64, 4, 4, 8), "float32")
    pool = GlobalPooling("avg:dropout=0.5")
    np.testing.assert_array_equal(np.asarray(pool(x)), np.ones((64, 8)))
    kept = np.asarray(pool(x, training=True)) * 16 * 0.5  # the number of kept elements of each window
    np.testing.assert_allclose(kept, np.round(kept), atol=1e-4)
    assert 0.4 < kept.mean() / 16 < 0.6 and np.mean((kept > 0) & (kept < 16)) > 0.9


def test_pooling_specs_parse_serialise_and_refuse_mistakes():
    assert parse_pooling("max:layernorm=true,dropout=0.25") == ("max", {"layernorm": True, "dropout": 0.25})
    assert parse_pooling("avg+max") == ("avg+max", {})
    pool = GlobalPooling("avg:dropout=0.3")
    again = keras.layers.deserialize(keras.layers.serialize(pool))
    assert (again.mode, again.dropout, again.layernorm) == ("avg", 0.3, False)
    for spec, message in (("median", "Unknown pooling 'median'"), ("avg:dropout=1.5", "must be a rate in"),
                          ("avg:dropout=half", "must be a rate in"), ("max:layernorm=yes", "must be true or false"),
                          ("avg:bn=true", "is not option=value with an option of dropout, layernorm")):
        with pytest.raises(ValueError, match=message) as err:
            GlobalPooling(spec)
        assert repr(spec) in str(err.value)


@pytest.mark.parametrize("recipe", ["dmltf_proxynca", "dmltf_proxynca_head", "proxy_nca_pp"])
def test_the_recipe_heads_match_numpy(recipe):
    """The embedding model of each head at inference, from the trunk's feature map: dml-tf seed
    GAP -> Dense; dml-tf HEAD GAP -> Dense -> BatchNorm; ProxyNCA++ GMP -> LayerNorm -> Linear."""
    flags = {"dmltf_proxynca": dict(pooling="avg:dropout=0.5", embedding_bn=False),
             "dmltf_proxynca_head": dict(pooling="avg:dropout=0.3", embedding_bn=True),
             "proxy_nca_pp": dict(pooling="max:layernorm=true", embedding_bn=False)}[recipe]
    keras.utils.set_random_seed(1)
    model = build_embedding_model("small_cnn", (8, 8, 3), embedding_dim=5, l2_normalize=False, **flags)
    head = model.get_layer("head")
    rng = np.random.default_rng(2)
    if head.bn is not None:  # moving statistics and affine weights away from their initial values
        head.bn.set_weights([rng.uniform(0.5, 2, 5), rng.normal(size=5), rng.normal(size=5), rng.uniform(0.5, 2, 5)])
    images = rng.uniform(size=(4, 8, 8, 3)).astype("float32")
    fmap = np.asarray(model.get_layer("backbone")(images), np.float64)
    w, b = (np.asarray(v, np.float64) for v in head.dense.get_weights())
    pooled = np_layernorm(fmap.max(axis=(1, 2))) if recipe == "proxy_nca_pp" else fmap.mean(axis=(1, 2))
    want = pooled @ w + b
    if head.bn is not None:
        gamma, beta, mean, var = (np.asarray(v, np.float64) for v in head.bn.get_weights())
        want = (want - mean) / np.sqrt(var + head.bn.epsilon) * gamma + beta
    np.testing.assert_allclose(np.asarray(model(images)), want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- the seed's inputs
def test_the_seeds_unit_range_inputs_next_to_keras_inception():
    x = np.random.default_rng(3).uniform(0, 255, size=(2, 3, 3, 3)).astype("float32")
    unit = np.asarray(preprocessing.get("unit_rgb")(x), np.float64)
    np.testing.assert_allclose(unit, x / 255.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(preprocessing.get("keras_inception")(x)), 2 * unit - 1, atol=1e-5)
    gray = x[..., :1]
    np.testing.assert_allclose(np.asarray(preprocessing.get("unit_rgb")(gray)), np.repeat(gray / 255.0, 3, -1),
                               rtol=1e-6)
    assert preprocessing.output_channels("unit_rgb", 1) == 3
    assert flagfile_flags("dmltf_proxynca_cub200.cfg")["preprocessing"] == "keras_inception"
    assert flagfile_flags("dmltf_proxynca_cub200_reference.cfg")["preprocessing"] == "unit_rgb"


# ----------------------------------------------------------------------------- the flagfiles' losses
def _loss_of(flagfile, num_classes, dim):
    cfg = config.make(**flagfile_flags(flagfile))
    keras.utils.set_random_seed(4)
    return builders.build_loss(cfg, None, num_classes, dim)


def np_orthogonality(p):
    """dml-tf train/loss/utils.py orthogonality(P): sum_c (1 - |p_c|^2)^2 / C
    + sum_{c < c'} (p_c . p_c')^2 / (2 (C - 1)), on the raw proxies; the flagfiles weigh it 0.1."""
    gram, c = p @ p.T, len(p)
    return ((1 - np.diag(gram)) ** 2).sum() / c + (np.triu(gram, 1) ** 2).sum() / (2 * (c - 1))


def _cosines(x, proxies):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    p = proxies / np.linalg.norm(proxies, axis=1, keepdims=True)
    return x @ p.T


LABELS = np.array([0, 0, 1, 2, 2, 3])


def test_the_seed_flagfile_loss_is_dml_tf_1df42c0s_proxynca():
    """train/loss/proxynca.py at 1df42c0: D = |x/|x| - 8 p/|p||^2, l = max(0, -log(e^-D_y / sum_{c!=y}
    e^-D_c)), mean (its 1e-6 and batch-max shift left out: they are no part of the formula)."""
    loss = _loss_of("dmltf_proxynca_cub200.cfg", 4, 3)
    x = np.random.default_rng(5).normal(size=(6, 3))
    x[1] = np.asarray(loss.proxies)[0]  # on its own proxy: a negative term, clipped to 0
    proxies = np.asarray(loss.proxies, np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    pn = 8 * proxies / np.linalg.norm(proxies, axis=1, keepdims=True)
    d = ((xn[:, None] - pn[None]) ** 2).sum(-1)
    onehot = np.eye(4, dtype=bool)[LABELS]
    terms = -np.log(np.exp(-d[onehot]) / np.where(onehot, 0, np.exp(-d)).sum(1))
    assert terms.min() < 0
    np.testing.assert_allclose(float(loss(LABELS, x.astype("float32"))), np.maximum(terms, 0).mean(), rtol=1e-5)


def test_the_head_flagfile_loss_is_dml_tf_heads_scaled_cosine_proxynca():
    """train/loss/proxynca.py at HEAD: logits 32 cos(x, p), mean_i [log sum_{c!=y} e^logit - logit_y],
    plus train/custom_model.py's 0.1 x orthogonality of the proxies."""
    loss = _loss_of("dmltf_proxynca_head_cub200.cfg", 4, 3)
    x = np.random.default_rng(6).normal(size=(6, 3))
    proxies = np.asarray(loss.proxies, np.float64)
    logits = 32 * _cosines(x, proxies)
    onehot = np.eye(4, dtype=bool)[LABELS]
    nca = np.mean(np.log(np.where(onehot, 0, np.exp(logits)).sum(1)) - logits[onehot])
    want = nca + 0.1 * np_orthogonality(proxies)
    np.testing.assert_allclose(float(loss(LABELS, x.astype("float32"))), want, rtol=1e-5)


def test_the_dml_tf_proxyanchor_flagfile_loss_is_dml_tfs_formula():
    """train/loss/proxyanchor.py at HEAD, s = 32, delta 0.1: mean over all C proxies of
    LSE_{x in X_p-}(s (cos + delta)) (0 if empty) minus sum_p LSE_{x in X_p+}(s (cos - delta)) / B, plus
    0.1 x orthogonality."""
    loss = _loss_of("dmltf_proxyanchor_cub200.cfg", 5, 3)  # class 4 has no sample: an empty positive set
    x = np.random.default_rng(7).normal(size=(6, 3))
    proxies = np.asarray(loss.proxies, np.float64)
    cos = _cosines(x, proxies)
    onehot = np.eye(5, dtype=bool)[LABELS]

    def lse(mask, values):  # per proxy, over its masked samples
        return np.array([np.log(np.exp(values[mask[:, p], p]).sum()) if mask[:, p].any() else 0.0 for p in range(5)])

    pos = lse(onehot, 32 * (cos - 0.1)).sum() / len(LABELS)
    neg = lse(~onehot, 32 * (cos + 0.1)).mean()
    want = neg - pos + 0.1 * np_orthogonality(proxies)
    np.testing.assert_allclose(float(loss(LABELS, x.astype("float32"))), want, rtol=1e-5)


# ----------------------------------------------------------------------------- InceptionV3 weights
def test_inception_v3_loads_a_keras_applications_notop_file(tmp_path):
    """The file keras.applications.InceptionV3(weights="imagenet", include_top=False) downloads is a
    Keras 2 HDF5 weights file (layer_names, one group per layer); a fabricated one, written in that
    layout from a randomly initialised network, loads through the registry at another input size."""
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(8)
    source = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(75, 75, 3))
    path = tmp_path / backbones.INCEPTION_V3_NOTOP
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
        # One group per layer, named as the layers (Keras numbers them per process: conv2d, conv2d_94, ...).
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        assert len(names) == len(source.layers) and set(names) <= set(f)
    model = backbones.build("inception_v3", (83, 83, 3), weights=str(path))
    assert model.output_shape == (None, 1, 1, 2048)
    loaded, saved = model.get_weights(), source.get_weights()
    assert len(loaded) == len(saved) == 376
    for a, b in zip(loaded, saved):
        np.testing.assert_array_equal(a, b)



def test_a_weights_file_of_another_network_is_refused_naming_the_file(tmp_path):
    from keras.src.legacy.saving import legacy_h5_format

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    wrong = tmp_path / "dense_weights.h5"  # a Keras 2 weights file of another network
    with h5py.File(wrong, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, other)
    with pytest.raises(ValueError, match="do not fit 'small_cnn'") as err:
        backbones.build("small_cnn", (8, 8, 3), weights=str(wrong))
    assert str(wrong) in str(err.value) and "small_cnn has no pretrained weights" in str(err.value)


def test_a_missing_inception_v3_file_says_where_to_get_it(tmp_path):
    missing = str(tmp_path / "nowhere" / backbones.INCEPTION_V3_NOTOP)
    with pytest.raises(FileNotFoundError) as err:
        backbones.build("inception_v3", (75, 75, 3), weights=missing)
    message = str(err.value)
    assert missing in message and "--backbone_weights" in message
    assert ("https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5") in message


# ----------------------------------------------------------------------------- flagfiles end to end
def test_every_new_flagfile_is_listed_here():
    new = sorted(f for f in os.listdir(CONFIGS) if f.startswith(("dmltf_", "soft_triple_", "proxy_", "adapted_")))
    assert new == sorted(RECIPES)
    for name in new:
        flags = flagfile_flags(name)
        assert flags["logdir"] == "runs/" + name[:-4]
        if flags["backbone"] == "inception_v3":
            assert flags["backbone_weights"].endswith(backbones.INCEPTION_V3_NOTOP)


@pytest.fixture(scope="module")
def miniatures(tmp_path_factory):
    """Two miniature class-folder trees converted to HDF5: zero-shot (train classes 0-2, test 3-5,
    the default recipes' split) and classification (classes 0-2 in both, the seed's TFDS split)."""
    from PIL import Image

    from dmltf.data.raw import folder

    rng = np.random.default_rng(0)
    out = {}
    for kind, test_classes in (("zero_shot", range(3, 6)), ("classification", range(0, 3))):
        root = tmp_path_factory.mktemp(kind) / "mini"
        for split, classes in (("train", range(0, 3)), ("test", test_classes)):
            for c in classes:
                os.makedirs(root / split / f"{c:03d}")
                for i in range(4):
                    pixels = (rng.uniform(size=(20, 24, 3)) * 60 + c * 30).astype(np.uint8)
                    Image.fromarray(pixels).save(root / split / f"{c:03d}" / f"{i}.jpg")
        out[kind] = str(root.parent / "mini.hdf5")
        assert folder.main(["--root", str(root), "--output", out[kind], "--resize", "none"]) in (0, None)
    return out


# Miniature batches per sampler: 3 training classes of 4 images.
BATCHES = {"random": (6, 1), "balanced": (2, 2)}
OVERRIDES = dict(backbone="small_cnn", backbone_weights="", image_size=16, max_steps=1, epochs=1, eval_every=0,
                 eval_every_steps=0, early_stop_patience=0, progress="none", export=False, tb_neighbours=0,
                 tb_projector_points=0, eval_batch_size=64)
# Twin flagfiles differ from their family's first only in their dataset's entries (the references'
# per-dataset values); every flagfile trains end to end.
DATASET_KEYS = {"dataset", "logdir"}
TWINS = {  # twin -> (its family's first flagfile, the entries allowed to differ)
    "dmltf_proxynca_cars196.cfg": ("dmltf_proxynca_cub200.cfg", DATASET_KEYS),
    "dmltf_proxynca_cub200_reference.cfg": ("dmltf_proxynca_cars196_reference.cfg", DATASET_KEYS),
    "dmltf_proxynca_head_cub200.cfg": ("dmltf_proxynca_head_cars196.cfg", DATASET_KEYS),
    "dmltf_proxyanchor_cars196.cfg": ("dmltf_proxyanchor_cub200.cfg", DATASET_KEYS),
    "proxy_anchor_cars196.cfg": ("proxy_anchor_cub200.cfg", DATASET_KEYS | {"lr_step_size"}),
    "proxy_anchor_sop.cfg": ("proxy_anchor_cub200.cfg",
                             DATASET_KEYS | {"lr", "lr_step_size", "lr_gamma", "freeze_bn", "eval_metrics"}),
    "proxy_nca_pp_cub200.cfg": ("proxy_nca_pp_cars196.cfg", DATASET_KEYS),
    "adapted_triplet_cub200.cfg": ("adapted_triplet_cars196.cfg", DATASET_KEYS | {"lr_step_size"}),
}


def _cfg(flagfile, miniatures, logdir):
    flags = flagfile_flags(flagfile)
    p, k = BATCHES[flags["batch_sampler"]]
    dataset = miniatures["classification" if flagfile.endswith("_reference.cfg") else "zero_shot"]
    return config.make(**{**flags, **OVERRIDES, "dataset": dataset, "logdir": str(logdir), "classes_per_batch": p,
                          "samples_per_class": k})


def _check_recipe(trainer, flagfile):
    """The optimizer groups' rates and weight decays and the head, as the reference has them."""
    assert trainer.train_split.num_classes == 3
    groups = {g.name: (g.base_lr, float(g.optimizer.weight_decay or 0.0), g.l2) for g in trainer.groups}
    assert groups == {name: pytest.approx(v, rel=1e-9) for name, v in RECIPES[flagfile].items()}
    model = trainer.method.embedding_model
    pool, head = model.get_layer("pool"), model.get_layer("head")
    assert (pool.mode, pool.dropout, pool.layernorm, head.batchnorm, head.l2_normalize) == _head_of(flagfile)
    flags = flagfile_flags(flagfile)
    assert head.embedding_dim == int(flags["embedding_dim"])
    norms = [layer for layer in model.get_layer("backbone").layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.trainable != (flags.get("freeze_bn") == "true") for layer in norms)


@pytest.mark.parametrize("flagfile", sorted(RECIPES))
def test_flagfile_runs_end_to_end(flagfile, miniatures, tmp_path):
    from dmltf.training.experiment import run

    cfg = _cfg(flagfile, miniatures, tmp_path / "run")
    trainer, rows = run(cfg)
    metrics = rows[-1][1]
    assert set(cfg.eval_metrics) <= set(metrics) and int(trainer.step.numpy()) == 1
    assert all(0 <= metrics[m] <= 1 for m in cfg.eval_metrics)
    _check_recipe(trainer, flagfile)


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_twin_flagfile_differs_only_in_its_dataset_entries(twin):
    first, allowed = TWINS[twin]
    flags, first_flags = flagfile_flags(twin), flagfile_flags(first)
    differing = {k for k in set(flags) | set(first_flags) if flags.get(k) != first_flags.get(k)}
    assert DATASET_KEYS <= differing <= allowed
