"""The dml_tf and dml_tf_seed augmentation presets (shi510/dml-tf input_pipeline.py) against their
definitions, checked in numpy on fixed seeds: colour jitter ranges, cutout squares (tensorflow-addons
random_cutout placement), the per-image coins, the clip, and the eval paths."""
import colorsys

import numpy as np
import tensorflow as tf

from dmltf import data
from dmltf.data import augmentation

SEEDS = [tf.constant([s, 7], tf.int64) for s in range(120)]


def cutout_box(out, background):
    """(top, left, height, width, fill values) of the pixels of ``out`` that differ from ``background``."""
    changed = np.any(out != background, axis=-1)
    if not changed.any():
        return None
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    return rows[0], cols[0], len(rows), len(cols), out[changed]


def test_cutout_squares_as_tfa_places_them():
    image = np.full((64, 64, 3), -1.0, np.float32)  # no fill value in [0, 1) can match it
    sides = []
    for seed in SEEDS:
        box = cutout_box(augmentation.random_cutout(tf.constant(image), seed).numpy(), image)
        if box is None:  # side 0
            sides.append(0)
            continue
        top, left, height, width, fill = box
        assert height == width and height % 2 == 0 and height <= 58  # a square of side 2 x U{0..29}
        assert (np.any(box[4] != -1.0, axis=-1)).all() and height * width == len(fill)  # filled, no holes
        assert np.all(fill == fill[0, 0]) and 0.0 <= fill[0, 0] < 1.0  # one value U[0, 1) per square
        # tfa: centre uniform in [side / 2, 64 - side / 2) and the square [centre - side / 2, centre + side / 2),
        # so the top-left corner lies in [0, 64 - side - 1] (the exclusive maxval never reaches the last row).
        assert 0 <= top <= 64 - height - 1 and 0 <= left <= 64 - width - 1
        sides.append(height)
    assert set(sides) <= set(range(0, 59, 2)) and len(set(sides)) > 20 and 20 < np.mean(sides) < 38
    # A side not smaller than the image: centred at length // 2 and clipped to the image.
    small = np.full((20, 20, 1), -1.0, np.float32)
    for seed in SEEDS[:40]:
        box = cutout_box(augmentation.random_cutout(tf.constant(small), seed).numpy(), small)
        if box is not None and box[2] == 20:
            assert box[:4] == (0, 0, 20, 20)
        elif box is not None:
            assert box[2] == box[3] < 20


def test_colour_jitter_ranges_and_order():
    # A grey image: hue leaves it unchanged, brightness adds delta, contrast scales about the mean.
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.uniform(0.2, 0.8, (16, 16, 1)), 3, axis=-1).astype(np.float32)
    deltas, factors = [], []
    for seed in SEEDS:
        out = augmentation.random_color(tf.constant(grey), seed).numpy().astype(np.float64)
        x = grey.astype(np.float64)
        factor = out.std() / x.std()
        delta = out.mean() - x.mean()
        np.testing.assert_allclose(out, (x - x.mean()) * factor + x.mean() + delta, atol=2e-5)
        deltas.append(delta)
        factors.append(factor)
    assert -0.1 <= min(deltas) < -0.05 and 0.05 < max(deltas) <= 0.1
    assert 0.9 <= min(factors) < 0.95 and 1.05 < max(factors) <= 1.1
    # A single colour: contrast does nothing, brightness keeps the hue, so the hue moved by U(-0.1, 0.1).
    colour = np.broadcast_to(np.float32([0.7, 0.4, 0.3]), (4, 4, 3))
    hue = colorsys.rgb_to_hsv(0.7, 0.4, 0.3)[0]
    shifts = []
    for seed in SEEDS:
        out = augmentation.random_color(tf.constant(colour), seed).numpy()[0, 0]
        shifts.append((colorsys.rgb_to_hsv(*out)[0] - hue + 0.5) % 1.0 - 0.5)
    assert -0.1 - 1e-4 <= min(shifts) < -0.05 and 0.05 < max(shifts) <= 0.1 + 1e-4
    # An image with one channel has no hue: the jitter still runs.
    assert augmentation.random_color(tf.constant(grey[..., :1]), SEEDS[0]).shape == (16, 16, 1)


def test_a_batch_draws_each_coin_per_image_and_clips():
    colour = np.uint8([250, 128, 3])  # brightness +-0.1 pushes red above 255 and blue below 0
    images = np.broadcast_to(colour, (96, 64, 64, 3)).copy()
    split = data.ArraySplit(images, np.repeat(np.arange(12), 8))
    sampler = data.samplers.get("balanced", classes_per_batch=12, samples_per_class=8)
    # image_size 56 -> resize 64: no resampling, so an untouched pixel keeps its value exactly.
    batch = next(iter(data.train_dataset(split, sampler, seed=3, epoch=0, augmentation="dml_tf", image_size=56)))
    batch = batch[0].numpy()  # preprocessing "none": x / 255
    assert batch.shape == (96, 56, 56, 3) and batch.min() >= 0.0 and batch.max() <= 1.0
    batch = batch * 255.0
    coloured, cut, clipped = [], [], []
    for out in batch:
        grey = np.ptp(out, axis=-1) == 0  # a cutout fill is one value in every channel
        cut.append(grey.any())
        if grey.all():  # a square covering the image hides the colour
            continue
        pixel = out[~grey][0]
        assert np.all(out[~grey] == pixel)  # the colour jitter is one change for the whole image
        coloured.append(not np.allclose(pixel, colour, atol=1e-3))
        clipped.append(np.isclose(pixel[0], 255.0, atol=1e-4) or pixel[2] == 0.0)
    # p = 0.5 each (a side-0 square, 1 in 30, cuts nothing); both outcomes in one batch of one seed.
    assert 0.3 < np.mean(coloured) < 0.7 and 0.3 < np.mean(cut) < 0.7
    assert any(clipped)


def resized(image, size):
    return tf.image.resize(image.astype(np.float32), (size, size), method="bilinear", antialias=False).numpy()


def window_of(out, full):
    """(top, left) where ``out`` equals a window of ``full`` (not flipped), else None."""
    h = out.shape[0]
    for top in range(full.shape[0] - h + 1):
        for left in range(full.shape[1] - h + 1):
            if np.allclose(full[top:top + h, left:left + h], out, atol=1e-3):
                return top, left
    return None


def test_eval_paths_and_the_seed_pipeline_as_it_ran():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (150, 90, 3), dtype=np.uint8) for _ in range(4)]
    full = [resized(im, 128) for im in images]  # image_size 112 -> resize 128 (256 / 224), no antialiasing
    dml_tf = augmentation.get("dml_tf", image_size=112)
    out = dml_tf.eval(images[0]).numpy()
    np.testing.assert_array_equal(out, dml_tf.eval(images[0]).numpy())
    np.testing.assert_allclose(out, full[0][8:120, 8:120], atol=1e-3)  # central_crop(224 / 256)
    seed_pipeline = augmentation.get("dml_tf_seed", image_size=112)
    offsets = []
    for image, resized_image in zip(images, full):
        out = seed_pipeline.eval(image).numpy()
        np.testing.assert_array_equal(out, seed_pipeline.eval(image).numpy())  # fixed per image
        offsets.append(window_of(out, resized_image))
        train = [window_of(seed_pipeline.train(image, s).numpy(), resized_image) for s in SEEDS[:4]]
        assert None not in train and len(set(train)) > 1  # random crops, never flipped, no colour or cutout
    assert None not in offsets and len(set(offsets)) > 1  # the test crop is random, drawn per image
