"""A converted dataset trains: the small CNN runs one epoch through the tf.data pipeline and the
trainer from each dmltf format and encoding a converter writes. Budget: ~25 s.
"""
import numpy as np
import pytest

import config
import raw_datasets as raw
from dmltf.data.raw import cars196
from dmltf.training.experiment import build_trainer


@pytest.fixture(scope="module")
def cars_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cars")
    raw.make_cars_car_ims(str(root), per_class=4)  # 3 train classes x 4 images
    return root


@pytest.mark.parametrize("fmt,encoding", [("hdf5", "raw"), ("hdf5", "jpeg"), ("tfrecord", "raw"),
                                          ("tfrecord", "jpeg")])
def test_small_cnn_trains_one_epoch_from_converted_file(cars_root, tmp_path, capsys, fmt, encoding):
    out = tmp_path / ("cars.h5" if fmt == "hdf5" else "cars_tfrecord")
    resize = ["--resize", "square", "--size", 28] if encoding == "raw" else ["--resize", "short_side", "--size", 28]
    argv = ["--root", cars_root, "--output", out, "--format", fmt, "--encoding", encoding] + resize
    assert cars196.main([str(a) for a in argv]) == 0
    cfg = config.make(dataset=str(out), backbone="small_cnn", embedding_dim=8, classes_per_batch=3,
                      samples_per_class=2, augmentation="dmltf", image_size=24, epochs=1, eval_every=0,
                      progress="none", export=False, logdir=str(tmp_path / "run"), tb_neighbours=0,
                      tb_projector_points=0, eval_metrics=["recall@1"], best_metric="recall@1", optimizer="sgd",
                      momentum=0.0, weight_decay=0.0, lr=0.05, loss="triplet", miner="all")
    trainer = build_trainer(cfg)
    assert trainer.train_split.num_examples == 12 and trainer.train_split.num_classes == 3
    assert trainer.steps_per_epoch == 2
    before = [v.numpy().copy() for v in trainer.method.trainable_variables]
    metrics = trainer.fit()
    after = [v.numpy() for v in trainer.method.trainable_variables]
    assert max(np.abs(a - b).max() for a, b in zip(before, after)) > 0  # the epoch changed the weights
    assert np.isfinite(trainer.history[-1]["loss"])
    assert 0.0 <= metrics["recall@1"] <= 1.0  # evaluated on the 12 test-class images
