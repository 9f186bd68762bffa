"""TensorBoard output: scalars, pair-distance histograms, the neighbour image grid and the
embedding projector files.
"""
import os

import numpy as np
import tensorflow as tf

from dmltf.evaluation import knn

GREEN, RED, GREY = (0, 200, 0), (220, 0, 0), (128, 128, 128)


def write_scalars(writer, prefix, values, step):
    with writer.as_default():
        for name, value in values.items():
            tf.summary.scalar(f"{prefix}/{name}", float(value), step=step)


def pair_distance_histograms(writer, embeddings, labels, step, max_points=1000, seed=0):
    """Histograms of positive and negative pair euclidean distances on a fixed subset."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(labels))[:max_points]
    x, y = embeddings[idx].astype(np.float64), labels[idx]
    sq = (x * x).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0))
    upper = np.triu(np.ones_like(d, dtype=bool), k=1)
    same = y[:, None] == y[None, :]
    with writer.as_default():
        write_histogram("distances/positive_pairs", d[upper & same], step)
        write_histogram("distances/negative_pairs", d[upper & ~same], step)


def histogram_buckets(values, bucket_count=30):
    """float64 [bucket_count, 3] rows (left edge, right edge, count): TensorBoard's own
    bucketing (``tf.summary.histogram``), computed with numpy. TensorBoard's builds a one-hot
    [N, buckets] float64 matrix: 108 MB for the ~450,000 pairs of ``pair_distance_histograms``,
    which the process then keeps resident (bench/memory.py)."""
    x = np.asarray(values, np.float64).reshape(-1)
    if x.size == 0:
        return np.zeros((bucket_count, 3))
    low, high = x.min(), x.max()
    if high == low:
        counts = np.zeros(bucket_count)
        counts[-1] = x.size
        edges = np.full(bucket_count, high)
        return np.stack([edges, edges, counts], axis=1)
    width = (high - low) / bucket_count
    index = np.minimum(np.floor((x - low) / width).astype(np.int32), bucket_count - 1)
    counts = np.bincount(index, minlength=bucket_count).astype(np.float64)
    edges = tf.linspace(tf.constant(low, tf.float64), tf.constant(high, tf.float64), bucket_count + 1).numpy()
    edges[-1] = high
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


def write_histogram(name, values, step):
    """``tf.summary.histogram(name, values, step)`` with the buckets computed by :func:`histogram_buckets`."""
    from tensorboard.plugins.histogram import metadata

    tf.summary.write(name, tf.constant(histogram_buckets(values)), step=step,
                     metadata=metadata.create_summary_metadata(display_name=None, description=None))


def neighbour_grid(query_images, neighbour_images, correct, border=2):
    """One uint8 image: a row per query, the query (grey frame) then its neighbours framed
    green (same label) or red (different label). Images are uint8 [.., H, W, C]."""
    q, k = correct.shape
    h, w = query_images.shape[1:3]
    cell_h, cell_w = h + 2 * border, w + 2 * border
    grid = np.full((q * cell_h, (k + 1) * cell_w, 3), 255, np.uint8)
    for i in range(q):
        row = [(query_images[i], GREY)] + [(neighbour_images[i, j], GREEN if correct[i, j] else RED) for j in range(k)]
        for j, (img, colour) in enumerate(row):
            y0, x0 = i * cell_h, j * cell_w
            grid[y0:y0 + cell_h, x0:x0 + cell_w] = colour
            rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
            grid[y0 + border:y0 + border + h, x0 + border:x0 + border + w] = rgb
    return grid


def write_neighbour_grid(writer, images_fn, embeddings, labels, step, num_queries=8, k=5, distance="euclidean"):
    """``images_fn(indices) -> uint8 [n, H, W, C]`` fetches images of the evaluated split."""
    queries = np.linspace(0, len(labels) - 1, num_queries).astype(np.int64)
    _, nn = knn(embeddings[queries], embeddings, k + 1, distance=distance)
    nn = np.array([[j for j in row if j != q][:k] for row, q in zip(nn, queries)])
    query_images = images_fn(queries)
    neighbour_images = images_fn(nn.reshape(-1)).reshape(len(queries), k, *query_images.shape[1:])
    grid = neighbour_grid(query_images, neighbour_images, labels[nn] == labels[queries][:, None])
    with writer.as_default():
        tf.summary.image("neighbours/top5", grid[None], step=step)
    return grid


# TensorBoard's projector refuses a sprite sheet larger than this on either side.
MAX_SPRITE_SIDE = 8192


def write_projector(logdir, embeddings, labels, images=None):
    """Projector files (TSV tensors, metadata, optional sprite) and ``projector_config.pbtxt``.

    The metadata is the label alone, one line per point: the projector reads a first line
    without a tab as data (single-column metadata has no header) and names the column "label".
    """
    tensor_path, meta_path = os.path.join(logdir, "projector_tensors.tsv"), os.path.join(logdir, "projector_metadata.tsv")
    np.savetxt(tensor_path, embeddings, delimiter="\t", fmt="%.6g")
    with open(meta_path, "w") as f:
        f.write("".join(f"{int(v)}\n" for v in labels))
    config = (
        "embeddings {\n  tensor_name: \"embeddings\"\n"
        f"  tensor_path: \"{os.path.basename(tensor_path)}\"\n  metadata_path: \"{os.path.basename(meta_path)}\"\n"
    )
    if images is not None:
        sprite, (h, w) = _sprite(images)
        tf.io.write_file(os.path.join(logdir, "projector_sprite.png"), tf.io.encode_png(sprite))
        config += f"  sprite {{\n    image_path: \"projector_sprite.png\"\n    single_image_dim: {w}\n    single_image_dim: {h}\n  }}\n"
    with open(os.path.join(logdir, "projector_config.pbtxt"), "w") as f:
        f.write(config + "}\n")


def _sprite(images):
    """A square sheet of the images in row-major order (the projector's sprite index), cells
    shrunk where the sheet would exceed ``MAX_SPRITE_SIDE``; returns it and the cell (h, w)."""
    n, h, w = images.shape[:3]
    images = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    side = int(np.ceil(np.sqrt(n)))
    scale = min(1.0, MAX_SPRITE_SIDE / (side * h), MAX_SPRITE_SIDE / (side * w))
    if scale < 1.0:
        h, w = max(int(h * scale), 1), max(int(w * scale), 1)
        images = tf.cast(tf.image.resize(images, (h, w), method="area"), tf.uint8).numpy()
    sheet = np.zeros((side * h, side * w, 3), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, side)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return sheet, (h, w)
