"""The spine contract from a new method's side: tests/toy_method.py adds a method with its own
hyper-parameter, default sampler and two configured losses, with no edit anywhere else."""
import glob

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import config
import toy_method  # noqa: F401  (registers "toy")
from dmltf import losses, methods
from dmltf.training import builders
from dmltf.training.experiment import run


def test_the_toy_method_brings_its_flags():
    flags = config.all_flags()
    assert "toy" in methods.names()
    assert flags["toy_mix"] == (0.5, "Weight of the auxiliary loss.")
    assert flags["toy_aux_loss"][0] == "proxy_nca" and flags["toy_aux_proxy_initializer"][0] == "orthogonal"
    assert flags["toy_aux_loss_lr_multiplier"][0] == 10.0
    # Every main-loss parameter again for the role, with the main defaults.
    assert flags["toy_aux_loss_proxy_nca_proxy_scale"][0] == flags["loss_proxy_nca_proxy_scale"][0]
    assert flags["toy_aux_miner_distance_weighted_cutoff"][0] == flags["miner_distance_weighted_cutoff"][0]


def test_each_loss_copy_gets_its_own_flags():
    cfg = config.make(method="toy", loss="proxy_nca", loss_proxy_nca_proxy_scale=3.0,
                      toy_aux_loss_proxy_nca_proxy_scale=5.0, toy_mix=0.25, embedding_dim=8)
    toy = builders.build_method(cfg, builders.DatasetInfo(num_classes=6, input_shape=(8, 8, 1)))
    assert isinstance(toy.main_loss, losses.get_class("proxy_nca")) and toy.main_loss.proxy_scale == 3.0
    assert toy.aux_loss.proxy_scale == 5.0 and toy.aux_loss.initializer == "orthogonal"
    assert toy.main_loss.initializer == losses.get_class("proxy_nca").default_initializer
    assert toy.aux_loss.lr_multiplier == 10.0 and toy.main_loss.lr_multiplier == losses.get_class("proxy_nca").lr_multiplier
    assert toy.mix == 0.25 and toy.main_loss.proxies is not toy.aux_loss.proxies
    sampler = builders.build_sampler(cfg)
    assert type(sampler).__name__ == "ClassBlocksSampler"
    other = builders.build_sampler(config.make(method="toy", batch_sampler="balanced"))
    assert type(other).__name__ == "BalancedSampler"


def test_the_toy_method_trains_with_its_groups(tmp_path):
    cfg = config.make(method="toy", loss="contrastive", toy_mix=0.5, dataset="digits", embedding_dim=8,
                      classes_per_batch=5, samples_per_class=2, epochs=1, max_steps_per_epoch=3, eval_every=0,
                      progress="none", export=False, logdir=str(tmp_path), tb_neighbours=0, tb_projector_points=0,
                      eval_metrics=["map@r"], optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=0.01)
    trainer, rows = run(cfg)
    rates = {g.name: g.learning_rate for g in trainer.groups}
    assert rates == pytest.approx({"model": 0.01, "aux_loss": 0.1})  # contrastive has no weights of its own
    assert 0.0 <= rows[-1][1]["map@r"] <= 1.0
    events = EventAccumulator(glob.glob(str(tmp_path / "events.out.tfevents.*"))[0]).Reload()
    tags = set(events.Tags()["scalars"]) | set(events.Tags().get("tensors", []))
    assert {"train/loss", "train/main", "train/aux", "learning_rate/aux_loss"} <= tags
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
