"""Kill and ``--resume`` is exact for every registered method and every miner with random state.

At an epoch-boundary kill (the process dies after epoch 1's checkpoint) and at a mid-epoch kill
(it dies after some steps of epoch 2, with no checkpoint after them), the resumed run ends with
the uninterrupted run's variables (weights, statistics, seed states, counters) and optimizer
slots, bit for bit. Parametrised over the registries: a new method or sampling miner is covered
without an edit here. Small CNN on the bundled digits, 3 steps an epoch (``small_cfg``).
"""
import numpy as np
import pytest

import config
import toy_method  # noqa: F401  (registers "toy", a method written as a new port would be)
from dmltf import methods, miners
from dmltf.training import builders
from dmltf.training.experiment import build_trainer
from test_trainer import small_cfg

# Flags a method needs here. DVML switches phase after step 4, inside epoch 2: both kills
# resume across the switch. LM-Metric's policy baseline and step counter are state too.
METHOD_FLAGS = {"dvml": dict(dvml_phase1_steps=4, dvml_decoder_units=16),
                # Digits have no super-classes: P x K batches; a tiny flow (its ActNorm initialised at step 1).
                "lm_metric": dict(loss="smooth_ap", batch_sampler="balanced", lm_metric_flow_width=4,
                                  lm_metric_flow_channels=4, lm_metric_flow_levels=1, lm_metric_flow_steps=2)}
RUN = dict(optimizer="adamw", lr=1e-3, weight_decay=1e-4, epochs=2)  # Adam: optimizer slots to compare


def random_state_miners():
    """Miners the flags build whose state includes random state (a seed generator's state is in
    ``variables``); maximum_loss needs a loss object, which no flag gives."""
    built = []
    for name in miners.names():
        try:
            built.append((name, builders.build_miner(config.make(), name)))
        except ValueError:
            continue
    return [name for name, miner in built if miner.variables]


CASES = ([pytest.param(dict(method=m, **METHOD_FLAGS.get(m, {})), id=f"method={m}") for m in methods.names()]
         + [pytest.param(dict(loss="margin", miner=m), id=f"miner={m}") for m in random_state_miners()])


def trainer_for(logdir, flags, **overrides):
    trainer = build_trainer(small_cfg(logdir, **{**RUN, **flags, **overrides}))
    trainer.eval_split = None  # evaluation changes no state; without it the test is faster
    return trainer


def state(trainer):
    """[(name, value)]: the method's variables, each optimizer's, the epoch and the step."""
    variables = [(f"method: {v.path}", v) for v in trainer.method.variables]
    variables += [(f"optimizer {g.name}: {v.path}", v) for g in trainer.groups for v in g.optimizer.variables]
    variables += [("epoch", trainer.epoch), ("step", trainer.step)]
    return [(name, np.array(v.numpy())) for name, v in variables]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """state(the uninterrupted two-epoch run) of a case's flags, run once per case."""
    runs = {}

    def run(flags):
        key = repr(sorted(flags.items()))
        if key not in runs:
            trainer = trainer_for(tmp_path_factory.mktemp("uninterrupted"), flags)
            trainer.fit()
            runs[key] = state(trainer)
        return runs[key]

    return run


def killed_at_the_epoch_boundary(logdir, flags):
    trainer_for(logdir, flags, epochs=1).fit()


def killed_mid_epoch(logdir, flags):
    killed = trainer_for(logdir, flags, epochs=1)
    killed.fit()
    killed.cfg.max_steps = killed.steps_per_epoch + 2  # two steps of epoch 2, then the process dies
    killed.train_epoch(1)
    assert int(killed.step.numpy()) == killed.steps_per_epoch + 2


@pytest.mark.parametrize("kill", [killed_at_the_epoch_boundary, killed_mid_epoch], ids=["epoch_boundary", "mid_epoch"])
@pytest.mark.parametrize("flags", CASES)
def test_kill_and_resume_ends_exactly_as_the_uninterrupted_run(tmp_path, uninterrupted, flags, kill):
    expected = uninterrupted(flags)
    kill(tmp_path, flags)
    resumed = trainer_for(tmp_path, flags, resume=True)
    assert resumed.restore() == 1
    resumed.fit()
    got = state(resumed)
    assert [name.split(":")[0] for name, _ in got] == [name.split(":")[0] for name, _ in expected]
    for (name, want), (_, value) in zip(expected, got, strict=True):
        np.testing.assert_array_equal(value, want, err_msg=name)


def test_the_cases_cover_the_registries():
    ids = {p.id for p in CASES}
    assert {f"method={m}" for m in methods.names()} <= ids and "method=toy" in ids
    assert "miner=distance_weighted" in ids


def killed_after_a_checkpoint_inside_epoch_2(logdir, flags):
    """--checkpoint_every_steps=2 with 3 steps an epoch: a checkpoint after step 4 (epoch 2's first),
    then the process dies after step 5; the resume continues epoch 2 with its second batch."""
    killed = trainer_for(logdir, flags, epochs=1)
    killed.fit()
    killed.cfg.max_steps = killed.steps_per_epoch + 2
    killed.train_epoch(1)
    assert int(killed.step.numpy()) == 5 and killed.manager.latest_checkpoint.endswith("ckpt-4")


@pytest.mark.parametrize("flags", [dict(method="metric_learner"), dict(method="dvml", **METHOD_FLAGS["dvml"]),
                                   dict(loss="margin", miner="distance_weighted")], ids=["metric_learner", "dvml", "miner"])
def test_a_checkpoint_inside_an_epoch_resumes_exactly(tmp_path, uninterrupted, flags):
    flags = {**flags, "checkpoint_every_steps": 2}
    expected = uninterrupted(flags)
    killed_after_a_checkpoint_inside_epoch_2(tmp_path, flags)
    resumed = trainer_for(tmp_path, flags, resume=True)
    assert resumed.restore() == 1 and int(resumed.step.numpy()) == 4
    resumed.fit()
    got = state(resumed)
    for (name, want), (_, value) in zip(expected, got, strict=True):
        np.testing.assert_array_equal(value, want, err_msg=name)
