"""dmltf.index (issue 17): exact and approximate search against a numpy brute force, the index
directory (round trip, refusals, damage), pair calibration against a numpy reference, and
train/index.py + train/search.py on a tiny digits run (the PNG grid included)."""
import json
import os
import re

import numpy as np
import pytest
from PIL import Image
from recipes import run_script

from dmltf.index import Index, IndexFormatError, commands
from dmltf.training import summaries
from test_trainer import small_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def brute_force(queries, refs, metric, k):
    """float64 reference: (distances, indices) of the k nearest, distances as dmltf.index reports them."""
    q, r = np.asarray(queries, np.float64), np.asarray(refs, np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        r = r / np.linalg.norm(r, axis=1, keepdims=True)
        d = 1.0 - q @ r.T
    else:
        d = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


def data(n=300, dim=8, classes=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, dim)) * 3
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


# -- search --------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("search", ["faiss", "tf"])
def test_exact_search_equals_a_numpy_brute_force(metric, search):
    x, y = data()
    queries = data(40, seed=1)[0]
    index = Index.build(x, y, ids=[f"r{i}" for i in range(len(x))], metric=metric, search=search)
    result = index.search(queries, k=7)
    distances, indices = brute_force(queries, x, metric, 7)
    np.testing.assert_array_equal(result.indices, indices)  # continuous random data: no ties
    np.testing.assert_allclose(result.distances, distances, atol=2e-5 if metric == "cosine" else 1e-4)
    np.testing.assert_array_equal(result.labels, y[indices])
    assert result.ids[3, 0] == f"r{indices[3, 0]}" and result.matches is None
    with pytest.raises(ValueError, match=r"k=301 must be between 1 and the 300 embeddings"):
        index.search(queries, k=301)
    with pytest.raises(ValueError, match=r"queries must be \[n, 8\] \(the index dimension\), got shape \(2, 3\)"):
        index.search(np.zeros((2, 3)), k=1)


def test_added_rows_follow_the_first_ones_and_default_ids_are_row_numbers():
    x, y = data()
    index = Index.build(x[:100], y[:100], metric="euclidean", search="tf")
    index.add(x[100:], y[100:])
    assert index.ids[[0, 150]].tolist() == ["0", "150"]
    np.testing.assert_array_equal(index.search(x[:20], k=5).indices, brute_force(x[:20], x, "euclidean", 5)[1])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ivf_with_nprobe_equal_to_nlist_is_exact_and_hnsw_is_close(metric):
    x, y = data(400)
    queries = data(50, seed=2)[0]
    _, indices = brute_force(queries, x, metric, 5)
    ivf = Index.build(x, y, metric=metric, backend="ivf", nlist=16, nprobe=16)
    np.testing.assert_array_equal(ivf.search(queries, 5).indices, indices)
    ivf.set_search_params(nprobe=1)  # one cell of 16: the search is approximate (and quicker)
    one = ivf.search(queries, 5).indices
    assert ivf.backend.params() == {"nlist": 16, "nprobe": 1} and not np.array_equal(one, indices)
    hnsw = Index.build(x, y, metric=metric, backend="hnsw", m=8, ef_construction=40, ef_search=64)
    found = hnsw.search(queries, 5).indices
    assert np.mean([len(np.intersect1d(a, b)) for a, b in zip(found, indices)]) / 5 > 0.95


def test_neighbours_an_ivf_search_does_not_reach_are_marked_missing():
    x = np.concatenate([np.zeros((5, 2)), np.full((5, 2), 100.0)]).astype(np.float32)
    x += np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    index = Index.build(x, np.arange(10) // 5, ids=[f"p{i}" for i in range(10)], metric="euclidean",
                        backend="ivf", nlist=2, nprobe=1)
    r = index.search(x[:1], k=8)  # the query's cell holds 5 vectors
    assert (r.indices[0, 5:] == -1).all() and np.isinf(r.distances[0, 5:]).all()
    assert r.labels[0].tolist() == [0] * 5 + [-1] * 3 and r.ids[0, 5:].tolist() == [""] * 3
    assert sorted(r.indices[0, :5].tolist()) == [0, 1, 2, 3, 4]


def test_bad_backend_names_and_parameters_are_refused():
    with pytest.raises(ValueError, match=r"Unknown index backend 'flat'; valid names: exact, hnsw, ivf"):
        Index(4, backend="flat")
    with pytest.raises(ValueError, match=r"index backend 'hnsw' takes no parameter nprobe; valid: m, ef_construction"):
        Index(4, backend="hnsw", nprobe=3)
    with pytest.raises(ValueError, match=r"Unknown metric 'dot'"):
        Index(4, metric="dot")
    with pytest.raises(ValueError, match=r"nprobe=9 exceeds nlist=4"):
        Index.build(data()[0], data()[1], backend="ivf", nlist=4, nprobe=9)
    with pytest.raises(ValueError, match=r"cannot change nlist after it is built"):
        Index(4, backend="ivf").set_search_params(nlist=3)


# -- the directory -------------------------------------------------------------------------
@pytest.mark.parametrize("backend,params", [("exact", {"search": "tf"}), ("ivf", {"nlist": 8, "nprobe": 2}),
                                            ("hnsw", {"m": 8, "ef_search": 16})])
def test_save_load_round_trip_gives_the_same_results(tmp_path, backend, params):
    x, y = data()
    index = Index.build(x, y, ids=[f"img{i}.jpg" for i in range(len(x))], metric="cosine", backend=backend,
                        source={"split": "test"}, **params)
    index.calibrate(*data(120, seed=3), target_precision=0.9)
    queries = data(30, seed=4)[0]
    before = index.search(queries, 6)
    path = index.save(tmp_path / "idx")
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no temporary directory left
    loaded = Index.load(path)
    after = loaded.search(queries, 6)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert (loaded.backend.params(), loaded.calibration, loaded.source) == (
        index.backend.params(), index.calibration, {"split": "test"})
    meta = json.load(open(tmp_path / "idx" / "index.json"))
    assert (meta["dim"], meta["size"], meta["metric"], meta["backend"]) == (8, 300, "cosine", backend)


def test_an_existing_directory_is_replaced_only_when_asked(tmp_path):
    x, y = data()
    Index.build(x, y, search="tf").save(tmp_path / "idx")
    smaller = Index.build(x[:50], y[:50], search="tf")
    with pytest.raises(FileExistsError, match=r"idx exists: choose another name, or overwrite it explicitly"):
        smaller.save(tmp_path / "idx")
    assert len(Index.load(tmp_path / "idx")) == 300
    smaller.save(tmp_path / "idx", overwrite=True)
    assert len(Index.load(tmp_path / "idx")) == 50 and sorted(os.listdir(tmp_path)) == ["idx"]


def test_a_save_that_dies_leaves_no_index_directory(tmp_path, monkeypatch):
    index = Index.build(*data(), search="tf")

    def dies(directory):
        raise KeyboardInterrupt

    monkeypatch.setattr(index.backend, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "idx")
    assert os.listdir(tmp_path) == []


def damage(path, name):
    """Flips one byte in the middle of ``path/name``."""
    file = os.path.join(path, name)
    raw = bytearray(open(file, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(file, "wb").write(bytes(raw))
    return file


def test_a_damaged_half_written_or_other_version_directory_is_a_clear_error(tmp_path):
    x, y = data()
    saved = {b: Index.build(x, y, backend=b, **p).save(tmp_path / b) for b, p in
             (("exact", {"search": "tf"}), ("ivf", {"nlist": 8}))}
    file = damage(saved["ivf"], "index.faiss")
    with pytest.raises(IndexFormatError, match="^" + re.escape(f"{file} is damaged: its size or SHA-256 differs")):
        Index.load(saved["ivf"])
    with open(os.path.join(saved["exact"], "labels.npy"), "r+b") as f:  # truncated
        f.truncate(100)
    with pytest.raises(IndexFormatError, match=r"labels.npy is damaged"):
        Index.load(saved["exact"])
    os.remove(os.path.join(saved["exact"], "labels.npy"))
    with pytest.raises(IndexFormatError, match=r"labels.npy is missing"):
        Index.load(saved["exact"])
    os.remove(os.path.join(saved["exact"], "index.json"))  # a directory whose writing did not finish
    with pytest.raises(IndexFormatError, match=r"index.json not found: .* is not an index directory"):
        Index.load(saved["exact"])
    meta_path = os.path.join(saved["ivf"], "index.json")
    meta = json.load(open(meta_path))
    json.dump({**meta, "format_version": 2}, open(meta_path, "w"))
    with pytest.raises(IndexFormatError, match=r"index.json: format_version 2, this dmltf reads version 1"):
        Index.load(saved["ivf"])
    open(meta_path, "w").write(json.dumps(meta)[:-20])
    with pytest.raises(IndexFormatError, match=r"index.json is damaged"):
        Index.load(saved["ivf"])
    with pytest.raises(IndexFormatError, match=r"no such index directory"):
        Index.load(tmp_path / "nothing")


# -- calibration ---------------------------------------------------------------------------
def reference_threshold(x, y, target):
    """float64 numpy: every pair i < j, the largest pair distance t with precision(d <= t) >= target."""
    x = np.asarray(x, np.float64)
    i, j = np.triu_indices(len(x), k=1)
    d = np.linalg.norm(x[i] - x[j], axis=1)
    same = y[i] == y[j]
    best = None
    for t in np.unique(d):
        accepted = d <= t
        precision = same[accepted].mean()
        if precision >= target:
            best = (t, precision, same[accepted].sum() / same.sum())
    return best


@pytest.mark.parametrize("target", [1.0, 0.95, 0.8])
def test_calibrate_gives_the_largest_threshold_with_the_asked_precision(target):
    # Three labels: 0 apart, 1 and 2 touching (their pairs decide the thresholds below 1.0).
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1, 2], 30)
    x = (np.array([[0.0, 0.0], [4.0, 0.0], [7.0, 0.0]])[y] + rng.normal(size=(90, 2)) * 0.6).astype(np.float32)
    index = Index.build(x, y, metric="euclidean", search="tf")
    c = index.calibrate(x, y, target_precision=target)
    threshold, precision, recall = reference_threshold(x, y, target)
    assert c.threshold == pytest.approx(threshold, rel=1e-9) and c.precision >= target
    assert (c.precision, c.recall) == (pytest.approx(precision), pytest.approx(recall))
    assert c.num_pairs == 90 * 89 // 2 and c.num_positive_pairs == 3 * 30 * 29 // 2
    assert index.threshold == c.threshold and len(c.curve["threshold"]) == len(np.unique(c.curve["threshold"]))
    # is_match: the pair distance within the threshold (the reference's own pairs).
    a, b = x[:-1], x[1:]  # neighbours in file order: mostly one label, at various distances
    d = np.linalg.norm(a.astype(np.float64) - b, axis=1)
    expected = d <= threshold
    clear = np.abs(d - threshold) > 1e-9  # float64 rounding aside
    np.testing.assert_array_equal(index.is_match(a, b)[clear], expected[clear])
    assert expected.any() and not expected.all()
    r = index.search(x[:5], k=4)
    np.testing.assert_array_equal(r.matches, r.distances <= c.threshold)


def test_cosine_calibration_and_is_match_use_the_cosine_distance():
    x, y = data(80)
    index = Index.build(x, y, metric="cosine", search="tf")
    with pytest.raises(ValueError, match=r"no threshold: call calibrate\(\) first"):
        index.is_match(x[:2], x[2:4])
    c = index.calibrate(x, y, target_precision=0.9)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    i, j = np.triu_indices(80, k=1)
    d = 1.0 - (xn[i] * xn[j]).sum(1).astype(np.float64)
    same = y[i] == y[j]
    assert same[d <= c.threshold].mean() == pytest.approx(c.precision) and c.precision >= 0.9
    larger = np.unique(d[d > c.threshold + 1e-6])  # the threshold is the largest with the precision
    assert len(larger) and max(same[d <= t].mean() for t in larger) < 0.9
    np.testing.assert_array_equal(index.is_match(x[:40], x[40:]), 1.0 - (xn[:40] * xn[40:]).sum(1) <= c.threshold)
    e1, e2 = np.eye(8)[:2]
    with pytest.raises(ValueError, match=r"no threshold reaches precision 1.0 on these pairs: the best is 0.3333, at "
                                         r"distance 1$"):
        index.calibrate(np.stack([e1, e1, e2, e2]), [0, 1, 0, 1], target_precision=1.0)


# -- the commands --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from dmltf.training.experiment import build_trainer

    logdir = tmp_path_factory.mktemp("run")
    trainer = build_trainer(small_cfg(logdir, max_steps_per_epoch=2))
    trainer.fit()
    return logdir, trainer


def test_index_and_search_commands_on_a_digits_run_write_the_neighbours_and_the_grid(digits_run, tmp_path):
    import config

    logdir, trainer = digits_run
    source = commands.make_source(run=str(logdir), which="last", split="test")
    embedder, _ = commands.load_embedder(source, defaults=vars(config.make()))
    index = commands.build_index(source, tmp_path / "index", calibrate_split="train", target_precision=0.8,
                                 defaults=vars(config.make()), embedder=embedder)
    split = trainer.eval_split
    assert len(index) == split.num_examples and index.ids[7] == "test/7" and index.threshold is not None
    with pytest.raises(FileExistsError, match=r"--output=.*index exists: choose another name, or pass --overwrite"):
        commands.build_index(source, tmp_path / "index")
    # The command line: its flags reach the index (an HNSW one of the same embeddings, euclidean).
    out = run_script(os.path.join(REPO, "train", "index.py"), f"--run={logdir}", "--which=last", "--split=test",
                     f"--output={tmp_path / 'hnsw'}", "--backend=hnsw", "--hnsw_m=8", "--ef_search=900",
                     "--metric=euclidean", env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"indexed {split.num_examples} x 16 embeddings of split 'test' (euclidean, hnsw" in out.stdout
    hnsw = Index.load(tmp_path / "hnsw")
    assert hnsw.backend.params() == {"m": 8, "ef_construction": 40, "ef_search": 900} and hnsw.calibration is None
    embeddings, _ = embedder.embed(split)
    np.testing.assert_allclose(hnsw.search(embeddings[:50], 1).distances[:, 0], 0.0, atol=1e-3)  # each finds itself
    rows = [3, 200, 600]
    images = split.load().images[rows]
    for row, image in zip(rows, images):
        Image.fromarray(np.repeat(image, 3, axis=-1)).save(tmp_path / f"q{row}.png")
    out = run_script(os.path.join(REPO, "train", "search.py"), f"--index={tmp_path / 'index'}",
                     f"--images={tmp_path / 'q*.png'}", "--k=5", f"--grid={tmp_path / 'grid.png'}", "--cell=32",
                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    # Each query is a stored test image: its nearest neighbour is itself, at distance ~0.
    paths = sorted(f"q{row}.png" for row in rows)
    assert out.stdout.rstrip().endswith(f"wrote the grid of 3 queries to {tmp_path / 'grid.png'}")
    for name, block in zip(paths, out.stdout.split("query ")[1:]):
        lines = [line for line in block.splitlines() if not line.startswith("wrote")]
        assert lines[0].endswith(name) and lines[2].split()[-1] == f"test/{name[1:-4]}", block
        assert float(lines[2].split()[1]) < 1e-3 and lines[2].split()[3] == "yes" and len(lines) == 2 + 5
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (3 * 36, 6 * 36, 3)
    assert tuple(grid[0, 0]) == summaries.GREY and tuple(grid[0, 36]) == summaries.GREEN  # the query, itself
    # In-process, the same search: the same grid.
    queries = [str(tmp_path / p) for p in paths]
    result, drawing = commands.search_images(tmp_path / "index", queries, k=5, grid=str(tmp_path / "again.png"),
                                             cell=32, embedder=embedder, defaults=vars(config.make()))
    np.testing.assert_array_equal(drawing, grid)
    neighbour = split.load().images[result.indices[1, 2]]  # query 2, neighbour 3: its image, enlarged 4 x 4
    np.testing.assert_array_equal(grid[36 + 2:36 + 34, 3 * 36 + 2:3 * 36 + 34],
                                  np.repeat(np.kron(neighbour, np.ones((4, 4, 1), np.uint8)), 3, axis=-1))
    # A tighter threshold: the frames are green within it, red beyond it.
    tight = Index.load(tmp_path / "index")
    tight.calibration = {**tight.calibration, "threshold": float(np.median(result.distances))}
    tight.save(tmp_path / "tight")
    result, drawing = commands.search_images(tmp_path / "tight", queries, k=5, grid=str(tmp_path / "tight.png"),
                                             cell=32, embedder=embedder, defaults=vars(config.make()))
    frames = [[tuple(drawing[i * 36, (j + 1) * 36]) for j in range(5)] for i in range(3)]
    expected = [[summaries.GREEN if m else summaries.RED for m in row] for row in result.matches]
    assert frames == expected and 0 < result.matches.sum() < 15
    with pytest.raises(FileExistsError, match=r"--grid=.*again.png exists"):
        commands.search_images(tmp_path / "index", queries[:1], grid=str(tmp_path / "again.png"))


def test_a_grayscale_embedder_converts_rgb_queries_after_grayscale_ones():
    """The Embedder converts RGB to grayscale for a 1-channel model whatever it traced before (a
    relaxed trace no longer knows the channel count)."""
    from dmltf.models import build_embedding_model
    from dmltf.training.inference import Embedder

    model = build_embedding_model("small_cnn", (8, 8, 1), embedding_dim=4)
    embedder = Embedder(model, "none", "none", 0, (8, 8, 1), source="test model")
    gray = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1)).astype(np.uint8)
    first = embedder.embed_images(gray)
    rgb = np.repeat(gray, 3, axis=-1)  # its grayscale conversion is the gray image (up to rounding)
    again = embedder.embed_images(rgb)
    np.testing.assert_allclose(again, first, atol=1e-2)
