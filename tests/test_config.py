"""config.py and the flags -> objects path: every loss and miner parameter is a flag, and
building a component from flags gives it exactly its own flag values."""
import inspect

import pytest

import config
from dmltf import losses, miners
from dmltf.training import builders


def own_params(cls):
    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
            if p.name not in config._SHARED_PARAMS and p.kind is p.POSITIONAL_OR_KEYWORD}


@pytest.mark.parametrize("kind,registry", [("loss", losses), ("miner", miners)])
def test_every_component_parameter_is_a_flag_with_its_default(kind, registry):
    flags = config.component_flags()
    for name in registry.names():
        for param, default in own_params(registry.get_class(name)).items():
            if isinstance(default, (bool, int, float, str)):
                assert flags[f"{kind}_{name}_{param}"][0] == default, (name, param)


@pytest.mark.parametrize("name", losses.names())
def test_every_loss_builds_from_flags(name):
    loss = builders.build_loss(config.make(loss=name), name, num_classes=10, embedding_dim=16)
    assert isinstance(loss, losses.get_class(name))


def test_flag_values_reach_the_component_and_no_other():
    cfg = config.make(loss_margin_margin=0.3, loss_margin_sample_mining_margin=0.7, miner="distance_weighted",
                      miner_distance_weighted_cutoff=0.25, loss_proxy_nca_proxy_scale=8.0,
                      loss_proxy_nca_pp_temperature=0.2, proxy_initializer="orthogonal", loss_lr_multiplier=7.0)
    margin = builders.build_loss(cfg, "margin", 10, 16)
    assert margin.margin == 0.3 and margin.miner.cutoff == 0.25
    assert builders.build_loss(cfg, "margin_sample_mining", 10, 16).margin == 0.7
    nca = builders.build_loss(cfg, "proxy_nca", 10, 16)
    assert nca.proxy_scale == 8.0 and nca.initializer == "orthogonal" and nca.lr_multiplier == 7.0
    assert builders.build_loss(cfg, "proxy_nca_pp", 10, 16).temperature == pytest.approx(0.2)
    xbm = builders.build_loss(config.make(loss_xbm_loss="contrastive", loss_contrastive_neg_margin=2.5), "xbm", 10, 16)
    assert xbm.loss.neg_margin == 2.5 and xbm.memory_embeddings.shape == (8192, 16)


def test_group_map_parsing():
    assert config.parse_group_map(["backbone:0.1", "loss:100"], "x") == {"backbone": 0.1, "loss": 100.0}
    with pytest.raises(ValueError, match="--group_lrs: expected entries like name:value, got 'decoder'"):
        config.parse_group_map(["decoder"], "group_lrs")
