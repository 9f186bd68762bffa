"""tf.data pipelines: class-balanced training batches and in-order evaluation batches."""
import numpy as np
import tensorflow as tf

# libjpeg's accurate integer DCT: the same pixels as Pillow's default decoder.
_DCT = "INTEGER_ACCURATE"


def decode_jpeg(data, channels):
    return tf.io.decode_jpeg(data, channels=channels, dct_method=_DCT)


def decode_all(encoded, channels, what):
    """Object array of JPEG bytes -> uint8 [N, H, W, C]; all images must share one size."""
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(encoded), tf.string))
    images = list(ds.map(lambda b: decode_jpeg(b, channels), num_parallel_calls=tf.data.AUTOTUNE)
                  .as_numpy_iterator())
    shapes = sorted({im.shape for im in images})
    if len(shapes) > 1:
        raise ValueError(f"{what}: JPEG images have {len(shapes)} different sizes (e.g. {shapes[:3]}), so "
                         f"they cannot be stacked; use the tf.data pipeline with image_size instead")
    return np.stack(images)
