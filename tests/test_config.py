"""config.py and the flags -> objects path: every component parameter is a flag, building a
component from flags gives it exactly its own flag values, and the library imports no
top-level module but its own."""
import ast
import inspect
import os
import subprocess
import sys

import pytest

import config
from dmltf import losses, methods, miners
from dmltf.data import samplers
from dmltf.training import builders
from dmltf.training.optim import parse_group_map

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = {"loss": builders.LOSS_SHARED, "miner": builders.MINER_SHARED, "sampler": builders.SAMPLER_SHARED}


def plain_defaults(cls, shared):
    """Written apart from dmltf.registry: each dmltf class's own __init__ along the MRO, for
    as long as the previous one forwards **kwargs."""
    out = {}
    for klass in cls.__mro__:
        if not klass.__module__.startswith(("dmltf", "tests", "toy_method")):
            break
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.name not in shared and p.name not in out and isinstance(p.default, (bool, int, float, str, tuple)):
                out[p.name] = p.default
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return out


@pytest.mark.parametrize("kind,registry", [("loss", losses), ("miner", miners), ("sampler", samplers)])
def test_every_component_parameter_is_a_flag_with_its_default(kind, registry):
    flags = config.all_flags()
    for name in registry.names():
        for param, default in plain_defaults(registry.get_class(name), SHARED[kind]).items():
            assert flags[f"{kind}_{name}_{param}"][0] == default, (name, param)


def test_inherited_parameters_are_flags_too():
    # adapted_triplet passes **kwargs on to triplet: its soft option is a flag of its own.
    flags = config.all_flags()
    assert flags["loss_adapted_triplet_soft"][0] is False and "loss_adapted_triplet_margin" in flags
    cfg = config.make(loss_adapted_triplet_soft=True)
    assert builders.build_loss(cfg, "adapted_triplet", 10, 16).soft is True


def test_method_hyperparameters_are_flags_with_their_help():
    flags = config.all_flags()
    defaults = plain_defaults(methods.get_class("dvml"), builders.METHOD_SHARED)
    assert {f"dvml_{p}" for p in defaults} <= set(flags)
    assert flags["dvml_mode"][0] == "paper" and flags["dvml_lambdas_phase2"][0] == (0.8, 1.0, 0.2, 0.8)
    assert "GeDML" in flags["dvml_mode"][1]
    assert "dvml_seed" not in flags  # the global --seed
    cfg = config.make(method="dvml", dvml_lambdas_phase1=["1", "0.5", "0", "2"], dvml_num_samples=3)
    assert cfg.dvml_lambdas_phase1 == [1.0, 0.5, 0.0, 2.0]  # absl list flags hold strings
    dvml = builders.build_method(cfg, builders.DatasetInfo(num_classes=4, input_shape=(8, 8, 1)))
    assert dvml.num_samples == 3 and dvml.lambdas.numpy().tolist()[0] == [1.0, 0.5, 0.0, 2.0]


def test_methods_and_samplers_register_on_import_alone():
    code = ("import dmltf.methods, dmltf.data.samplers as s; "
            "print(dmltf.methods.names(), s.names())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    names, sampler_names = out.stdout.strip().split("] [")
    assert "'dvml'" in names and "'metric_learner'" in names
    assert "'balanced'" in sampler_names and "'random'" in sampler_names


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


def test_the_sampler_is_the_flag_or_the_methods_default():
    assert type(builders.build_sampler(config.make())).__name__ == "BalancedSampler"
    sampler = builders.build_sampler(config.make(batch_sampler="random", classes_per_batch=4, samples_per_class=8))
    assert type(sampler).__name__ == "RandomSampler" and sampler.batch_size == 32
    with pytest.raises(ValueError, match="Unknown batch sampler 'nope'; valid names: .*balanced"):
        builders.build_sampler(config.make(batch_sampler="nope"))


def test_group_map_parsing():
    assert parse_group_map(["backbone:0.1", "loss:100"], "x") == {"backbone": 0.1, "loss": 100.0}
    with pytest.raises(ValueError, match="--group_lrs: expected entries like name:value, got 'decoder'"):
        parse_group_map(["decoder"], "group_lrs")


def test_the_library_imports_no_top_level_module_but_its_own():
    """No module of dmltf/ imports config (or any other top-level file of the checkout)."""
    top_level = {os.path.splitext(n)[0] for n in os.listdir(ROOT) if n.endswith(".py")} | {"train", "datasets",
                                                                                              "pretrained", "tests"}
    for folder, _, files in os.walk(os.path.join(ROOT, "dmltf")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module]
                else:
                    continue
                assert not {m.split(".")[0] for m in modules} & top_level, (path, modules)


def test_the_library_works_beside_a_users_own_config_py(tmp_path):
    """A project with its own config.py (most have one) imports dmltf.training unharmed."""
    (tmp_path / "config.py").write_text("raise ImportError('the user project config, not dmltf')\n")
    code = "from dmltf.training import builders, experiment, inference, trainer; print('ok')"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_setup_installs_only_the_dmltf_package():
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    assert "py_modules" not in {k.arg for k in call.keywords}
