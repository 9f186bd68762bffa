"""Augmentation presets, named after the code base they reproduce.

Each preset maps one uint8 image [H, W, C] to float32 [h, w, C] in [0, 255]: ``train(image,
seed)`` is random but a pure function of the stateless ``seed`` (int64 [2]), ``eval(image)`` is
deterministic. ``image_size`` (an int or (h, w)) overrides the crop size; the resize before a
crop scales with it (e.g. ``dmltf`` with image_size=112 resizes to 128).

=================  =====================================================  ==============================
name               train                                                  eval
=================  =====================================================  ==============================
``none``           no geometric change; resize to image_size if given     same as train
``dmltf``          resize to 256x256 (aspect not kept), random 224 crop,  resize 256x256, centre crop 224
                   horizontal flip p=0.5 (shi510/dml-tf input_pipeline)
``torch_imagenet`` torchvision RandomResizedCrop(224, scale (0.08, 1),    Resize(256) of the short side,
                   ratio (3/4, 4/3)) + flip p=0.5                         CenterCrop(224)
``dml_tf``         as ``dmltf`` (resize without antialiasing), then on   as ``dmltf`` (no antialiasing)
                   [0, 1] values: colour jitter and cutout, each p=0.5
                   per image, then clip (dml-tf ``attach_augmentation``)
``dml_tf_seed``    resize to 256x256 (no antialiasing), random 224 crop  the same random crop, seeded by
                   (the dml-tf seed's pipeline as it ran)                 the image's pixels
``dvml``           resize to 256x256 unless already, random 227 crop,     resize 256x256, centre crop 227
                   flip p=0.5 (DVML ``RandomFixedSizeCrop``)              at offset 15 (the seed's)
``drml``           Resize(256) of the short side, then RandomResizedCrop  as ``torch_imagenet``
                   (224, scale (0.16, 1), ratio (0.75, 1.33)) + flip p=0.5
                   (GeDML ``train_transforms.yaml``, DRML new layout)
``drml_seed``      as ``drml`` with 227 crops (DRML's old layout)         Resize(256), CenterCrop(227)
``paddle``         PaddlePaddle ``imgtool.random_crop`` (area (0.08, 1),  short side to 224 (Lanczos),
                   ratio (3/4, 4/3), clamped to fit), Lanczos resize to   centre crop 224
                   224, flip p=0.5 (metric_learning ``imgtool.py``)
``lm_metric``      as ``torch_imagenet`` with 256 crops (LM-Metric's      Resize(256), CenterCrop(256)
                   ``datasets/sop.py``)
=================  =====================================================  ==============================

Resizing is bilinear with antialiasing (as PIL's bilinear filter that torchvision uses on PIL
images), except in the ``dml_tf`` presets (``tf.image.resize``'s default, as that seed ran);
``tf.image`` is used because keras.ops has no stateless random crops. Deviation: torchvision
rounds resized values back to uint8; here they stay float32.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> from dmltf.data import augmentation
    >>> aug = augmentation.get("dmltf", image_size=112)
    >>> img = tf.zeros((300, 200, 3), tf.uint8)
    >>> tuple(aug.train(img, tf.constant([1, 2], tf.int64)).shape), tuple(aug.eval(img).shape)
    ((112, 112, 3), (112, 112, 3))
"""
import math

import tensorflow as tf

from dmltf.registry import Registry


def _named(name, cls):
    cls.name = name
    return cls


AUGMENTATIONS = Registry("augmentation", on_register=_named)
register, names = AUGMENTATIONS.register, AUGMENTATIONS.names


def get(identifier, image_size=None):
    """A preset by name (or an Augmentation object, returned as is)."""
    if isinstance(identifier, Augmentation):
        return identifier
    return AUGMENTATIONS.lookup(identifier)(image_size)


def _pair(size):
    return None if size is None else ((int(size), int(size)) if isinstance(size, (int, float)) else tuple(size))


def resize(image, size, antialias=True):
    """Bilinear (antialiased) resize to ``size`` (h, w) as float32; a no-op cast if already that size."""
    image = tf.cast(image, tf.float32)
    same = tf.reduce_all(tf.shape(image)[:2] == tf.convert_to_tensor(size, tf.int32))
    return tf.cond(same, lambda: image,
                   lambda: tf.image.resize(image, size, method="bilinear", antialias=antialias))


def _lanczos4_matrix(in_size, out_size):
    """[out, in] weights of OpenCV's INTER_LANCZOS4 along one axis: source x = (i + 0.5) in / out
    - 0.5, the 8 taps floor(x) - 3 .. floor(x) + 4 weighted sinc(d) sinc(d / 4) and normalised to
    sum 1, taps beyond the border clamped to the edge pixel; no antialiasing when shrinking."""
    scale = tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)
    x = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale - 0.5
    base = tf.floor(x)
    offsets = tf.range(-3, 5, dtype=tf.float64)
    d = offsets[None, :] - (x - base)[:, None]  # tap position - source position
    safe = tf.where(tf.abs(d) < 1e-7, tf.ones_like(d), d)
    kernel = tf.where(tf.abs(d) < 1e-7, tf.ones_like(d),
                      4.0 * tf.sin(math.pi * safe) * tf.sin(math.pi * safe / 4.0) / (math.pi ** 2 * safe ** 2))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)
    taps = tf.clip_by_value(tf.cast(base[:, None] + offsets[None, :], tf.int32), 0, in_size - 1)
    return tf.reduce_sum(tf.one_hot(taps, in_size, dtype=tf.float64) * kernel[:, :, None], axis=1)


def lanczos4_resize(image, size):
    """``cv2.resize(image, (w, h), interpolation=cv2.INTER_LANCZOS4)`` of a uint8 image as float32
    rounded and saturated to [0, 255] (OpenCV's fixed-point weights may differ by one level)."""
    image = tf.cast(image, tf.float64)
    shape = tf.shape(image)
    rows, cols = _lanczos4_matrix(shape[0], size[0]), _lanczos4_matrix(shape[1], size[1])
    out = tf.einsum("oh,hwc->owc", rows, image)
    out = tf.einsum("pw,owc->opc", cols, out)
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.float32)


def crop(image, top, left, size):
    return tf.image.crop_to_bounding_box(image, top, left, size[0], size[1])


def centre_crop(image, size):
    """torchvision CenterCrop offsets: round((H - h) / 2) (half to even, as Python's round)."""
    shape = tf.shape(image)
    top = tf.cast(tf.round((shape[0] - size[0]) / 2), tf.int32)
    left = tf.cast(tf.round((shape[1] - size[1]) / 2), tf.int32)
    return crop(image, top, left, size)


def random_offset(u, room):
    """Uniform integer in [0, room] from u ~ U[0, 1)."""
    return tf.minimum(tf.cast(tf.floor(u * tf.cast(room + 1, tf.float32)), tf.int32), room)


def image_fingerprints(images):
    """int64 [B]: a 64-bit fingerprint of each image's values (``tf.fingerprint`` of its bytes), a
    stateless seed that depends on the image alone, whatever the batch it comes in."""
    return tf.bitcast(tf.fingerprint(tf.reshape(images, (tf.shape(images)[0], -1))), tf.int64)


def random_flip(image, seed):
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)


class Augmentation:
    """Base preset: ``size`` is the output (h, w), None when the input size is kept."""

    name = None
    default_size = None

    def __init__(self, image_size=None):
        self.size = _pair(image_size) or self.default_size

    def output_shape(self, input_shape, channels):
        """(h, w, channels) made from ``input_shape`` ((H, W, C), or None if unknown / varying)."""
        if self.size is not None:
            return (*self.size, channels)
        return None if input_shape is None else tuple(input_shape)

    def train(self, image, seed):
        raise NotImplementedError

    def eval(self, image):
        raise NotImplementedError

    def _scaled(self, reference_resize, reference_crop):
        """The resize before a crop, scaled as image_size scales the reference crop."""
        return tuple(int(round(s * reference_resize / reference_crop)) for s in self.size)


@register("none")
class NoAugmentation(Augmentation):
    def train(self, image, seed):
        return self.eval(image)

    def eval(self, image):
        return tf.cast(image, tf.float32) if self.size is None else resize(image, self.size)


class _SquareResizeCrop(Augmentation):
    """Square resize, then a random (train) or centre (eval) crop, and a flip (train)."""

    reference_resize = None
    antialias = True

    def __init__(self, image_size=None):
        super().__init__(image_size)
        self.resize_size = self._scaled(self.reference_resize, self.default_size[0])

    def random_crop(self, image, seed):
        """The square resize, then a crop at uniform random offsets."""
        image = resize(image, self.resize_size, self.antialias)
        u = tf.random.stateless_uniform([2], seed)
        top = random_offset(u[0], self.resize_size[0] - self.size[0])
        left = random_offset(u[1], self.resize_size[1] - self.size[1])
        return crop(image, top, left, self.size)

    def train(self, image, seed):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        return random_flip(self.random_crop(image, crop_seed), flip_seed)

    def eval(self, image):
        return centre_crop(resize(image, self.resize_size, self.antialias), self.size)


@register("dmltf")
class DmltfAugmentation(_SquareResizeCrop):
    default_size = (224, 224)
    reference_resize = 256


def random_color(image, seed):
    """shi510/dml-tf ``random_color`` on [0, 1] values: hue shift U(-0.1, 0.1) (RGB only: it leaves a
    grey image unchanged), brightness + U(-0.1, 0.1), contrast factor U(0.9, 1.1) about each
    channel's mean, in that order and unclipped (the seed clips after every augmentation)."""
    hue_seed, brightness_seed, contrast_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    if image.shape[-1] != 1:
        image = tf.image.stateless_random_hue(image, 0.1, hue_seed)
    image = tf.image.stateless_random_brightness(image, 0.1, brightness_seed)
    return tf.image.stateless_random_contrast(image, 0.9, 1.1, contrast_seed)


CUTOUT_MAX_HALF_SIDE = 29


def random_cutout(image, seed):
    """shi510/dml-tf ``random_cutout``: a square of side 2 * U{0..29} filled with one value U[0, 1),
    placed as tensorflow-addons ``image.random_cutout`` (``cutout_ops.py``) places it: the centre
    uniform in [side / 2, length - side / 2) on each axis (length // 2 when the side is not smaller
    than the image), rows and columns [centre - side / 2, centre + side / 2) clipped to the image."""
    side_seed, centre_seed, fill_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    side = 2 * tf.random.stateless_uniform([], side_seed, 0, CUTOUT_MAX_HALF_SIDE + 1, dtype=tf.int32)
    fill = tf.random.stateless_uniform([], fill_seed)
    lengths, half = tf.shape(image)[:2], side // 2
    centre = tf.where(side >= lengths, lengths // 2,
                      half + random_offset(tf.random.stateless_uniform([2], centre_seed), lengths - side - 1))
    rows, cols = tf.range(lengths[0]), tf.range(lengths[1])
    inside = ((rows >= centre[0] - half) & (rows < centre[0] + half))[:, None] & (
        (cols >= centre[1] - half) & (cols < centre[1] + half))[None, :]
    return tf.where(inside[:, :, None], tf.cast(fill, image.dtype), image)


@register("dml_tf")
class DmlTfAugmentation(_SquareResizeCrop):
    """shi510/dml-tf ``train/input_pipeline.py`` with its augmentations as intended (the README's
    "Training Conditions"; METHODS.md 4.1): resize 256 x 256 (``tf.image.resize``, no antialiasing),
    random 224 crop, /255, then flip, :func:`random_color` and :func:`random_cutout`, each with
    probability 0.5 drawn per image, and clip to [0, 1]; returned x 255, as every preset's. Eval:
    resize 256, centre crop 224 / 256 (the HEAD version's ``central_crop``). ``image_size`` scales
    the resize (cutout sides stay as the seed's).

    Deviation: the seed's ``attach_augmentation`` is never called, and its coin is drawn once per
    run (one outcome for every image); ``dml_tf_seed`` is the pipeline as it ran."""

    default_size = (224, 224)
    reference_resize = 256
    antialias = False

    def train(self, image, seed):
        geometry_seed, coin_seed, colour_seed, cutout_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 4))
        image = super().train(image, geometry_seed) / 255.0  # random crop and flip
        colour, cutout = tf.unstack(tf.random.stateless_uniform([2], coin_seed) < 0.5)
        image = tf.cond(colour, lambda: random_color(image, colour_seed), lambda: image)
        image = tf.cond(cutout, lambda: random_cutout(image, cutout_seed), lambda: image)
        return tf.clip_by_value(image, 0.0, 1.0) * 255.0


@register("dml_tf_seed")
class DmlTfSeedAugmentation(DmlTfAugmentation):
    """The dml-tf seed's pipeline as it ran (commits 1df42c0 / 639c5e9): resize 256 x 256 (no
    antialiasing) and a random 224 crop, on the train *and* the test images (a quirk), no flip,
    colour or cutout. Deviation: the seed redrew each test crop at every pass over the test set;
    here a test image's crop is drawn from a seed made of its pixels, the same at every
    evaluation."""

    def train(self, image, seed):
        return self.random_crop(image, seed)

    def eval(self, image):
        return self.random_crop(image, tf.concat([image_fingerprints(image[None]), tf.zeros([1], tf.int64)], 0))


@register("dvml")
class DvmlAugmentation(_SquareResizeCrop):
    """The seed's eval centre crop (datasets/random_fixed_size_crop_mod.py L95-101, the batch path its
    HDF5 batches take): offset (H - h) // 2, plus 1 when both margins are odd, i.e. 15 for 256 -> 227
    (29 pixels: 15 above, 14 below), where torchvision rounds 14.5 to 14. Here each axis takes
    ceil((H - h) / 2); the seed's other cases (one odd margin: a window one pixel too large; a zero
    margin: an empty slice) cannot arise from its square 256 x 256 images."""

    default_size = (227, 227)
    reference_resize = 256

    def eval(self, image):
        image = resize(image, self.resize_size)
        top, left = ((r - s + 1) // 2 for r, s in zip(self.resize_size, self.size))
        return crop(image, top, left, self.size)


@register("torch_imagenet")
class TorchImagenetAugmentation(Augmentation):
    """torchvision RandomResizedCrop + RandomHorizontalFlip; eval Resize(256) + CenterCrop(224)."""

    default_size = (224, 224)
    reference_resize = 256  # the short side before the eval crop, for the default size
    scale = (0.08, 1.0)
    ratio = (3 / 4, 4 / 3)
    attempts = 10

    def train(self, image, seed):
        box_seed, offset_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        top, left, h, w = self._crop_box(tf.shape(image)[0], tf.shape(image)[1], box_seed, offset_seed)
        image = resize(tf.image.crop_to_bounding_box(image, top, left, h, w), self.size)
        return random_flip(image, flip_seed)

    def _crop_box(self, height, width, box_seed, offset_seed):
        """torchvision RandomResizedCrop.get_params: 10 tries, then a centre crop of clamped ratio."""
        H, W = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        u = tf.random.stateless_uniform([2, self.attempts], box_seed)
        area = H * W * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = tf.exp(log_lo + u[1] * (log_hi - log_lo))
        ws = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
        hs = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
        ok = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
        first = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)  # first successful try

        def tried():
            h, w = hs[first], ws[first]
            v = tf.random.stateless_uniform([2], offset_seed)
            return random_offset(v[0], height - h), random_offset(v[1], width - w), h, w

        def fallback():
            in_ratio = W / H
            w = tf.where(in_ratio > self.ratio[1], tf.cast(tf.round(H * self.ratio[1]), tf.int32), width)
            h = tf.where(in_ratio < self.ratio[0], tf.cast(tf.round(W / self.ratio[0]), tf.int32), height)
            return (height - h) // 2, (width - w) // 2, h, w

        return tf.cond(tf.reduce_any(ok), tried, fallback)

    def eval(self, image):
        """Resize(256 * size / 224) of the short side, then CenterCrop(size)."""
        return centre_crop(self._resize_short(image), self.size)

    def _resize_short(self, image):
        """torchvision Resize(int): the short side to ``reference_resize`` (scaled as the crop size
        is), the long side in proportion, truncated."""
        short = self._scaled(self.reference_resize, self.default_size[0])[0]
        shape = tf.cast(tf.shape(image)[:2], tf.float64)
        hw = tf.cast(tf.floor(short * shape / tf.reduce_min(shape)), tf.int32)
        return resize(image, hw)


@register("drml")
class DrmlAugmentation(TorchImagenetAugmentation):
    """GeDML's train transform (DRML): Resize(256) of the short side, RandomResizedCrop(224, scale
    (0.16, 1), ratio (0.75, 1.33)), flip; eval Resize(256) + CenterCrop(224)."""

    scale = (0.16, 1.0)
    ratio = (0.75, 1.33)

    def train(self, image, seed):
        return super().train(self._resize_short(image), seed)


@register("drml_seed")
class DrmlSeedAugmentation(DrmlAugmentation):
    """DRML's old layout: the same with 227 crops after Resize(256)."""

    default_size = (227, 227)


@register("paddle")
class PaddleAugmentation(Augmentation):
    """PaddlePaddle metric_learning ``imgtool.process_image`` (color jitter and rotation off, as
    its flags default): train ``random_crop`` then flip, eval ``resize_short`` + ``crop_image``."""

    default_size = (224, 224)
    scale = (0.08, 1.0)
    ratio = (3 / 4, 4 / 3)

    def _crop_box(self, height, width, seed):
        """imgtool.random_crop: the aspect ratio's square root from a uniform ratio, the area
        fraction uniform in [min(0.08, b), min(1, b)] with b the largest that fits, sizes
        truncated, offsets uniform integers."""
        H, W = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
        u = tf.cast(tf.random.stateless_uniform([4], seed), tf.float64)
        aspect = tf.sqrt(tf.constant(self.ratio[0], tf.float64) + u[0] * (self.ratio[1] - self.ratio[0]))
        w_unit, h_unit = aspect, 1.0 / aspect
        bound = tf.minimum((W / H) / w_unit ** 2, (H / W) / h_unit ** 2)
        low = tf.minimum(tf.constant(self.scale[0], tf.float64), bound)
        high = tf.minimum(tf.constant(self.scale[1], tf.float64), bound)
        side = tf.sqrt(H * W * (low + u[1] * (high - low)))
        w, h = tf.cast(side * w_unit, tf.int32), tf.cast(side * h_unit, tf.int32)
        top = random_offset(tf.cast(u[2], tf.float32), height - h)
        left = random_offset(tf.cast(u[3], tf.float32), width - w)
        return top, left, h, w

    def train(self, image, seed):
        box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        shape = tf.shape(image)
        top, left, h, w = self._crop_box(shape[0], shape[1], box_seed)
        image = lanczos4_resize(tf.image.crop_to_bounding_box(image, top, left, h, w), self.size)
        return random_flip(image, flip_seed)

    def eval(self, image):
        """resize_short: each side x round(side * size / short side) (half to even, as Python 3's
        round), Lanczos; then the centre crop at offsets (side - size) // 2."""
        shape = tf.cast(tf.shape(image)[:2], tf.float64)
        hw = tf.cast(tf.round(shape * (self.size[0] / tf.reduce_min(shape))), tf.int32)
        image = lanczos4_resize(image, hw)
        top, left = (hw[0] - self.size[0]) // 2, (hw[1] - self.size[1]) // 2
        return crop(image, top, left, self.size)


@register("lm_metric")
class LMMetricAugmentation(TorchImagenetAugmentation):
    """LM-Metric's ``datasets/sop.py``: RandomResizedCrop(256) + flip; eval Resize(256) + CenterCrop(256)."""

    default_size = (256, 256)
