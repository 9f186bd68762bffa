"""Loading a trained embedder for evaluation and inference: from a training run directory
(its ``config.json`` and a checkpoint) or from an exported ``.keras`` model (with the
``input_spec.json`` written beside it).
"""
import os
import types

import keras
import numpy as np
import tensorflow as tf

import dmltf.models  # noqa: F401  (registers the custom layers a saved model may hold)
from dmltf import data
from dmltf.training.trainer import compiled_embedding_step, embed_batches, read_json, resolve_jit_compile


class NonFiniteEmbeddings(ValueError):
    """The embedder gave NaN or inf embeddings: they are refused, not returned."""


class Embedder:
    """``embed(split)`` / ``embed_images(uint8 images)`` with the training run's input handling.

    ``source`` names the run or model in messages; ``jit_compile``: ``fn`` compiled with XLA (a
    function XLA cannot compile says so once and runs without it)."""

    def __init__(self, fn, augmentation, preprocessing, image_size, input_shape, batch_size=256, *, source,
                 jit_compile=False):
        traced = compiled_embedding_step(fn, f"the embedding step of {source}", jit_compile)
        if input_shape[-1] == 1:  # a grayscale model fed images decoded as RGB (JPEG of any size)
            # Converted before the traced call, on the batch's concrete shape: a relaxed trace
            # (reduce_retracing) no longer knows the channel count.
            self.fn = lambda x: traced(tf.image.rgb_to_grayscale(x) if x.shape[-1] == 3 else x)
        else:
            self.fn = traced
        self.augmentation, self.preprocessing = augmentation, preprocessing
        # Without a crop size, images of other sizes are resized to the model's input.
        self.image_size = image_size or (input_shape[0] if augmentation == "none" else None)
        self.batch_size, self.input_shape, self.source = batch_size, tuple(input_shape), source

    def embed(self, split):
        """(embeddings, labels) of ``split``; raises NonFiniteEmbeddings if any row is not finite."""
        embeddings, labels = embed_batches(self.fn, split, self.batch_size, augmentation=self.augmentation,
                                           preprocessing=self.preprocessing, image_size=self.image_size)
        bad = int((~np.isfinite(embeddings).all(axis=1)).sum())
        if bad:
            raise NonFiniteEmbeddings(f"{self.source} gives non-finite (NaN or inf) embeddings for {bad} of "
                                      f"{len(embeddings)} images: its weights are not usable")
        return embeddings, labels

    def embed_images(self, images):
        return self.embed(data.ArraySplit(images, np.zeros(len(images), np.int64)))[0]


def from_run(run_dir, which="best", batch_size=256, defaults=None):
    """The method of a training run, restored from its ``best`` or ``last`` checkpoint.

    ``defaults``: values of configuration keys that the run's ``config.json`` predates (the
    command line passes ``vars(config.make())``)."""
    from dmltf.training import builders

    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{cfg_path} not found: --run must be a train/main.py --logdir")
    stored = read_json(cfg_path)
    cfg = types.SimpleNamespace(**{**(defaults or {}), **stored})
    folder = os.path.join(run_dir, "best" if which == "best" else "checkpoints")
    path = tf.train.latest_checkpoint(folder)
    if path is None:
        hint = " (no evaluation ran: use which='last')" if which == "best" else ""
        raise FileNotFoundError(f"no checkpoint in {folder}{hint}")
    train_split, _ = builders.load_splits(cfg)
    info = builders.DatasetInfo(train_split.num_classes, builders.input_shape(cfg, train_split))
    method = builders.build_method(cfg, info)
    tf.train.Checkpoint(method=method).restore(path).expect_partial().assert_existing_objects_matched()
    embedder = Embedder(method.embed, cfg.augmentation, builders.preprocessing(cfg), cfg.image_size, info.input_shape,
                        batch_size, source=f"run {run_dir} (checkpoint {path})",
                        jit_compile=resolve_jit_compile(getattr(cfg, "jit_compile", "auto")))
    return embedder, cfg


def from_export(model_path, batch_size=256):
    """An exported ``embedding_model.keras`` with its ``input_spec.json``."""
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"model {model_path!r} not found (train/main.py writes <logdir>/export/)")
    spec_path = os.path.join(os.path.dirname(model_path), "input_spec.json")
    if not os.path.exists(spec_path):
        raise FileNotFoundError(f"{spec_path} not found: it records the preprocessing the model expects")
    spec = types.SimpleNamespace(**read_json(spec_path))
    model = keras.saving.load_model(model_path)
    return Embedder(lambda x: model(x, training=False), spec.augmentation, spec.preprocessing, spec.image_size,
                    spec.input_shape, batch_size, source=f"model {model_path}")
