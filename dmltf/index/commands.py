"""What ``train/index.py`` and ``train/search.py`` do, callable from Python.

A *source* says what an index holds: the embedder (``run`` + ``which``, or an exported
``model``) and the split it embedded (``dataset`` + ``split``; an empty ``dataset`` with a run is
the run's own dataset). It is saved in ``index.json``, so ``search`` re-creates the embedder for
its queries and re-opens the split for the neighbours' images without being told again.

:func:`search_images` draws the neighbours with the TensorBoard grid
(:func:`dmltf.training.summaries.neighbour_grid`): a row per query, the query framed grey, its
neighbours framed green or red. With a calibrated index green is a match (distance within the
threshold); without one, green is "has the label of the nearest neighbour".
"""
import glob
import os

import numpy as np

from dmltf.index.index import Index

SOURCE_KEYS = ("run", "which", "model", "dataset", "split")


def make_source(run="", which="best", model="", dataset="", split="test"):
    """The source dict of an index (paths made absolute, so it is found from any directory)."""
    if bool(run) == bool(model):
        raise ValueError("give exactly one of --run or --model")
    if model and not dataset:
        raise ValueError("--dataset is required with --model")
    absolute = lambda p: os.path.abspath(p) if p and p != "digits" else p  # noqa: E731
    return {"run": absolute(run), "which": which, "model": absolute(model), "dataset": absolute(dataset),
            "split": split}


def load_embedder(source, batch_size=256, defaults=None):
    """(Embedder, the run's config or None) of ``source``; ``defaults`` as
    :func:`dmltf.training.inference.from_run` takes them."""
    from dmltf.training import inference

    if not (source.get("run") or source.get("model")):
        raise ValueError("the index records no run or model to embed the queries with (it was built from "
                         "Python?): give --run or --model")
    if source.get("run"):
        return inference.from_run(source["run"], source.get("which", "best"), batch_size, defaults=defaults)
    return inference.from_export(source["model"], batch_size), None


def run_config(source, defaults=None):
    """The training config of the source's run (``defaults`` for keys it predates), or None for a model."""
    import types

    from dmltf.training.trainer import read_json

    if not source.get("run"):
        return None
    path = os.path.join(source["run"], "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: the index's run is no longer there")
    return types.SimpleNamespace(**{**(defaults or {}), **read_json(path)})


def open_split(source, cfg, split=None):
    """The split ``split`` (default: the source's) of the source's dataset."""
    from dmltf import data
    from dmltf.training import builders

    name = split or source.get("split")
    if not name:
        raise ValueError("the index records no split to show the neighbours' images from: draw no grid")
    if source.get("dataset"):
        if source["dataset"] == "digits":
            raise ValueError("--dataset=digits is only available through --run (its protocol decides the split)")
        return data.open_dataset(source["dataset"]).split(name)
    if cfg is None:
        raise ValueError("--dataset is required with --model")
    train, evaluation = builders.load_splits(cfg)
    named = {cfg.train_split: train, cfg.eval_split: evaluation}
    if name in named:
        return named[name]
    if cfg.dataset == "digits":
        raise ValueError(f"split {name!r}: a digits run has the splits {', '.join(named)}")
    return data.open_dataset(cfg.dataset).split(name)


def build_index(source, output, *, metric="cosine", backend="exact", params=None, calibrate_split="",
                target_precision=0.9, overwrite=False, batch_size=256, defaults=None, embedder=None):
    """Embeds the source's split, indexes it (rows ``<split>/<row>``), calibrates a threshold on
    the embeddings of ``calibrate_split`` if given, and saves the index to ``output``.
    ``embedder``: one already loaded from ``source``."""
    output = os.path.abspath(output)
    if os.path.lexists(output) and not overwrite:  # before the embedding, not after it
        raise FileExistsError(f"--output={output} exists: choose another name, or pass --overwrite")
    if not os.path.isdir(os.path.dirname(output)):
        raise FileNotFoundError(f"--output={output}: directory {os.path.dirname(output)} does not exist")
    Index(1, metric, backend, **(params or {}))  # bad names and parameters fail before the embedding
    if embedder is None:
        embedder, _ = load_embedder(source, batch_size, defaults)
    cfg = run_config(source, defaults)
    split = open_split(source, cfg)
    calibration_split = open_split(source, cfg, calibrate_split) if calibrate_split else None
    ids = [f"{source['split']}/{i}" for i in range(split.num_examples)]
    index = Index.from_embedder(embedder, split, ids, metric=metric, backend=backend, source=source, **(params or {}))
    if calibration_split is not None:
        index.calibrate(*embedder.embed(calibration_split), target_precision=target_precision)
        index.source["calibrate_split"] = calibrate_split
    index.save(output, overwrite=overwrite)
    return index


def image_paths(patterns):
    """The files of ``patterns`` (paths or globs), in order; one that matches nothing is an error."""
    paths = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern] * os.path.isfile(pattern)
        if not found:
            raise FileNotFoundError(f"--images: {pattern!r} matches no file")
        paths += found
    return paths


def read_image(path, channels=3):
    """uint8 [H, W, channels] (RGB, or grayscale for 1) of an image file; an unreadable one is
    a ValueError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB" if channels == 3 else "L")).reshape(image.height, image.width, -1)
    except OSError as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def _cells(images, size):
    """uint8 [n, size, size, C]: images resized to grid cells (nearest when enlarging keeps small images sharp)."""
    import tensorflow as tf

    method = "nearest" if images.shape[1] < size else "area"
    return tf.cast(tf.round(tf.image.resize(images, (size, size), method=method)), tf.uint8).numpy()


def search_images(index_dir, paths, k=8, grid="", cell=64, overwrite=False, batch_size=256, defaults=None,
                  embedder=None):
    """The ``k`` (at most the index size) neighbours of the image files ``paths`` in the index
    ``index_dir``; writes the PNG grid to ``grid`` if given (under a temporary name, then
    renamed). Returns (SearchResult, grid uint8 image or None). ``embedder``: instead of the
    index's source."""
    from dmltf.data import ArraySplit
    from dmltf.training import summaries
    from dmltf.training.trainer import split_images

    if grid and os.path.lexists(grid) and not overwrite:
        raise FileExistsError(f"--grid={grid} exists: choose another name, or pass --overwrite")
    index = Index.load(index_dir)
    if embedder is None:
        embedder, _ = load_embedder(index.source, batch_size, defaults)
    # Read with the model's channels, as the indexed split's images are (the grid draws both).
    images = [read_image(p, 1 if embedder.input_shape[-1] == 1 else 3) for p in paths]
    # One image a split: its own size goes through the model's evaluation transform.
    queries = np.concatenate([embedder.embed(ArraySplit(img[None], np.zeros(1, np.int64)))[0] for img in images])
    result = index.search(queries, min(k, len(index)))
    if not grid:
        return result, None
    split = open_split(index.source, run_config(index.source, defaults))
    found = result.indices >= 0
    neighbours = _cells(split_images(split, size=cell)(np.where(found, result.indices, 0).reshape(-1)), cell)
    neighbours = neighbours.reshape(*result.indices.shape, cell, cell, -1) * found[..., None, None, None]
    same = result.matches if result.matches is not None else result.labels == result.labels[:, :1]
    drawing = summaries.neighbour_grid(np.concatenate([_cells(img[None], cell) for img in images]), neighbours,
                                       same & found)
    partial = f"{grid}.partial-{os.getpid()}.png"
    try:
        from PIL import Image

        Image.fromarray(drawing).save(partial)
        os.replace(partial, grid)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return result, drawing
