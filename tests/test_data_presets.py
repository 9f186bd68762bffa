"""Augmentation presets (geometry against hand-computed crops) and preprocessing values."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dmltf.data import augmentation, preprocessing

SEEDS = [tf.constant([s, 11], tf.int64) for s in range(8)]


def random_image(h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def smooth_image(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(y * 255) // h, (x * 255) // w, ((x + y) * 127) // (h + w)], -1).astype(np.uint8)


def find_window(out, image, size):
    """(top, left, flipped) of the size x size window of ``image`` equal to ``out``, else None."""
    for top in range(image.shape[0] - size + 1):
        for left in range(image.shape[1] - size + 1):
            win = image[top:top + size, left:left + size]
            for flipped, cand in ((False, win), (True, win[:, ::-1])):
                if np.array_equal(out[0, 0], cand[0, 0]) and np.array_equal(out, cand):
                    return top, left, flipped
    return None


@pytest.mark.parametrize("name,train_shape,eval_shape", [
    ("none", (37, 50, 3), (37, 50, 3)),
    ("dmltf", (224, 224, 3), (224, 224, 3)),
    ("torch_imagenet", (224, 224, 3), (224, 224, 3)),
    ("dvml", (227, 227, 3), (227, 227, 3)),
])
def test_preset_shapes_and_range(name, train_shape, eval_shape):
    aug = augmentation.get(name)
    image = random_image(37, 50)
    for out, shape in ((aug.train(image, SEEDS[0]), train_shape), (aug.eval(image), eval_shape)):
        out = out.numpy()
        assert out.shape == shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 255.0
    assert augmentation.get(name, image_size=16).eval(image).shape == (16, 16, 3)


@pytest.mark.parametrize("name,crop", [("dvml", 227), ("dmltf", 224)])
def test_square_presets_crop_exact_windows(name, crop):
    image = random_image(256, 256, seed=1)
    aug = augmentation.get(name)
    np.testing.assert_array_equal(aug.eval(image).numpy(), image[15:15 + crop, 15:15 + crop] if crop == 227
                                  else image[16:240, 16:240])
    found = [find_window(aug.train(image, s).numpy(), image, crop) for s in SEEDS]
    assert None not in found
    assert len({f[:2] for f in found}) > 1 and {f[2] for f in found} == {False, True}


def test_image_size_scales_the_resize():
    image = random_image(40, 30, seed=2)
    out = augmentation.get("dmltf", image_size=112).eval(image).numpy()
    resized = tf.image.resize(image.astype(np.float32), (128, 128), antialias=True).numpy()  # 112 * 256 / 224
    np.testing.assert_allclose(out, resized[8:120, 8:120], atol=1e-4)
    assert augmentation.get("none", image_size=(5, 7)).train(image, SEEDS[0]).shape == (5, 7, 3)
    np.testing.assert_array_equal(augmentation.get("none").train(image, SEEDS[0]).numpy(), image)


def test_torch_imagenet_eval_matches_pil_resize_and_centre_crop():
    image = smooth_image(300, 400)
    out = augmentation.get("torch_imagenet").eval(image).numpy()
    # torchvision: Resize(256) -> 256 x int(256 * 400 / 300) = 256 x 341; CenterCrop offsets
    # round(32 / 2) = 16 and round(117 / 2) = 58.
    pil = np.asarray(Image.fromarray(image).resize((341, 256), Image.BILINEAR).crop((58, 16, 58 + 224, 16 + 224)))
    assert out.shape == (224, 224, 3)
    assert np.abs(out - pil).mean() < 1.0


def test_torch_imagenet_fallback_centre_crop():
    # 10 x 300: no try can fit (needs scale < 0.08), so torchvision crops h = 10, w = round(10 * 4/3) = 13
    # at top 0, left (300 - 13) // 2 = 143.
    image = random_image(10, 300, seed=3)
    expected = tf.image.resize(image[:, 143:156].astype(np.float32), (224, 224), antialias=True).numpy()
    for s in SEEDS[:3]:
        out = augmentation.get("torch_imagenet").train(image, s).numpy()
        assert np.allclose(out, expected, atol=1e-3) or np.allclose(out, expected[:, ::-1], atol=1e-3)


def test_torch_imagenet_crop_boxes_follow_scale_and_ratio():
    aug = augmentation.get("torch_imagenet")
    boxes = np.array([[int(v) for v in aug._crop_box(120, 160, tf.constant([i, 3], tf.int64),
                                                     tf.constant([i, 5], tf.int64))] for i in range(40)])
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 120).all() and (left + w <= 160).all()
    area = h * w / (120 * 160)
    assert area.min() >= 0.07 and area.max() <= 1.0 and area.std() > 0.1
    assert (w / h >= 0.7).all() and (w / h <= 1.4).all()


@pytest.mark.parametrize("name,size", [("drml", 224), ("drml_seed", 227)])
def test_drml_presets_resize_the_short_side_to_256_then_crop(name, size):
    """GeDML: Resize(256) -> RandomResizedCrop(size, scale (0.16, 1), ratio (0.75, 1.33)) -> flip;
    eval Resize(256) -> CenterCrop(size), for both crop sizes."""
    aug = augmentation.get(name)
    image = tf.constant(np.random.default_rng(0).integers(0, 255, (300, 200, 3)), tf.uint8)
    resized = augmentation.resize(image, (384, 256))  # short side 256, long side 300 * 256 / 200
    np.testing.assert_allclose(aug.eval(image).numpy(), augmentation.centre_crop(resized, (size, size)).numpy())
    assert tuple(aug.train(image, tf.constant([1, 2], tf.int64)).shape) == (size, size, 3)
    boxes = np.array([[int(v) for v in aug._crop_box(256, 384, tf.constant([i, 3], tf.int64),
                                                     tf.constant([i, 5], tf.int64))] for i in range(40)])
    top, left, h, w = boxes.T
    area = h * w / (256 * 384)
    assert area.min() >= 0.155 and area.max() <= 1.0 and area.std() > 0.1
    assert (w / h >= 0.745).all() and (w / h <= 1.335).all()


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="Unknown augmentation 'imagenet'; valid names: dml_tf, dml_tf_seed, dmltf, "
                                         "drml, drml_seed, dvml, lm_metric, none, paddle, torch_imagenet"):
        augmentation.get("imagenet")
    with pytest.raises(ValueError, match="Unknown preprocessing 'bgr'; valid names: caffe_bgr, "
                                         "caffe_bgr_bninception, caffe_bgr_keras, keras_inception, none, raw, "
                                         "torch_imagenet"):
        preprocessing.get("bgr")


def test_preprocessing_values():
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 4, 3)).astype(np.float32)
    x64 = x.astype(np.float64)
    bgr = x64[..., ::-1]
    expected = {
        "none": x64 / 255,
        "raw": x64,
        "caffe_bgr": bgr - [104, 117, 123],
        "caffe_bgr_bninception": bgr - [104, 117, 128],
        "torch_imagenet": (x64 / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
        "keras_inception": x64 / 127.5 - 1,
    }
    for name, ref in expected.items():
        np.testing.assert_allclose(np.asarray(preprocessing.get(name)(x)), ref, rtol=1e-5, atol=1e-4, err_msg=name)
    custom = preprocessing.get("caffe_bgr", means=(1.0, 2.0, 3.0))(x)
    np.testing.assert_allclose(np.asarray(custom), bgr - [1, 2, 3], rtol=1e-5, atol=1e-4)


def test_grayscale_preprocessing():
    gray = np.arange(64, dtype=np.float32).reshape(8, 8, 1)
    np.testing.assert_allclose(np.asarray(preprocessing.get("none")(gray)), gray / 255, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(preprocessing.get("raw")(gray)), gray)
    # RGB normalisations see a grayscale image as R = G = B (PIL's convert("RGB")).
    rgb = np.concatenate([gray, gray, gray], axis=-1)
    for name in preprocessing.RGB_ONLY:
        np.testing.assert_array_equal(np.asarray(preprocessing.get(name)(gray)), np.asarray(preprocessing.get(name)(rgb)))
        assert preprocessing.output_channels(name, 1) == 3
    assert preprocessing.output_channels("none", 1) == 1
    with pytest.raises(ValueError, match="'caffe_bgr' needs RGB or grayscale images"):
        preprocessing.get("caffe_bgr")(np.zeros((2, 2, 2), np.float32))
