"""--miner and --distance reach the loss or stop the run: no loss ignores them silently."""
import glob
import os
import subprocess
import sys

import pytest

import config
from recipes import flagfile_flags
import toy_method  # noqa: F401  (registers "toy", whose "aux" role is a proxy loss by default)
from dmltf import losses, methods
from dmltf.training import builders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIR_FLAGS = {"miner": "semi_hard", "distance": "cosine"}


def _pair_flag_value(loss, flag):
    """The miner / distance name the built loss (or the loss it wraps) uses, None if none."""
    for layer in (loss, getattr(loss, "loss", None)):
        part = getattr(layer, flag, None)
        if part is not None:
            return part.registry_name if flag == "miner" else part.name
    return None


@pytest.mark.parametrize("flag", sorted(PAIR_FLAGS))
@pytest.mark.parametrize("name", losses.names())
def test_miner_and_distance_reach_the_loss_or_are_refused(name, flag):
    value = PAIR_FLAGS[flag]
    cfg = config.make(loss=name, **{flag: value})
    try:
        loss = builders.build_loss(cfg, None, num_classes=10, embedding_dim=16)
    except ValueError as e:
        assert str(e).startswith(f"--{flag}={value} does not apply to --loss={name}:") and "\n" not in str(e)
    else:
        assert _pair_flag_value(loss, flag) == value


def test_a_loss_roles_miner_is_refused_for_its_proxy_loss():
    cfg = config.make(method="toy", loss="triplet", miner="semi_hard", toy_aux_miner="batch_hard", embedding_dim=8)
    with pytest.raises(ValueError, match="^--toy_aux_miner=batch_hard does not apply to --toy_aux_loss=proxy_nca:"):
        builders.build_method(cfg, builders.DatasetInfo(num_classes=6, input_shape=(8, 8, 1)))


def test_a_miner_whose_required_parameters_have_no_flag_is_refused_by_name():
    cfg = config.make(loss="contrastive", miner="maximum_loss")
    with pytest.raises(ValueError, match=r"^--miner=maximum_loss needs loss, output_batch_size, which no flag sets"):
        builders.build_loss(cfg, None, num_classes=10, embedding_dim=16)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "train", "configs", "*.cfg"))),
                         ids=os.path.basename)
def test_the_shipped_flagfiles_build_their_losses(path):
    cfg = config.make(**flagfile_flags(path))
    for role in [None, *methods.get_class(cfg.method).loss_roles]:
        builders.build_loss(cfg, None, 10, 16, "" if role is None else f"{cfg.method}_{role}_")


def test_train_main_reports_it_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "train", "main.py"), "--flagfile=train/configs/demo.cfg",
                          "--miner=semi_hard", f"--logdir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=180, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "error: --miner=semi_hard does not apply to --loss=proxy_anchor: ProxyAnchorLoss is not a pair-based loss; "
        "leave --miner empty")
