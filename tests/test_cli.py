"""train/evaluate.py and train/infer.py on a trained run and on its export."""
import json
import os

import h5py
import numpy as np
import pytest
from PIL import Image
from recipes import run_script

import config
from dmltf.training.experiment import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name, *args):
    return run_script(os.path.join(ROOT, "train", name), *args, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                      timeout=180)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("run")
    cfg = config.make(dataset="digits", embedding_dim=16, classes_per_batch=10, samples_per_class=4, epochs=1,
                      max_steps_per_epoch=5, eval_every=1, progress="none", tb_neighbours=0, tb_projector_points=0,
                      logdir=str(logdir), eval_metrics=["recall@1", "map@r", "nmi"], seed=3,
                      eval_kmeans="sklearn:n_init=2,max_iter=50", eval_average="macro")
    trainer, rows = run(cfg)
    return logdir, rows[-1][1], trainer


def test_evaluate_run_and_export_reproduce_the_training_metrics(trained, tmp_path):
    logdir, metrics, _ = trained
    out = script("evaluate.py", f"--run={logdir}", "--metrics=recall@1,map@r,nmi", f"--output_json={tmp_path / 'm.json'}")
    assert out.returncode == 0, out.stderr[-2000:]
    saved = json.load(open(tmp_path / "m.json"))
    # The run's averaging (--eval_average), k-means (--eval_kmeans) and seed.
    for name in ("recall@1", "map@r", "nmi"):
        assert saved[name] == pytest.approx(metrics[name], abs=1e-6), name
    assert "map@r" in out.stdout
    # The exported model evaluated on a stored dataset needs --dataset: a clear error without it.
    out = script("evaluate.py", f"--model={logdir / 'export' / 'embedding_model.keras'}")
    assert out.returncode != 0 and "--dataset is required with --model" in out.stderr


def test_infer_images_and_split(trained, tmp_path):
    logdir, _, trainer = trained
    images = trainer.eval_split.load().images[:3]
    for i, img in enumerate(images):
        Image.fromarray(np.repeat(img, 3, axis=-1)).save(tmp_path / f"{i}.png")
    out_h5 = tmp_path / "emb.h5"
    out = script("infer.py", f"--model={logdir / 'export' / 'embedding_model.keras'}",
                 f"--images={tmp_path / '*.png'}", f"--output={out_h5}")
    assert out.returncode == 0, out.stderr[-2000:]
    with h5py.File(out_h5) as f:
        got = f["embeddings"][:]
        assert [p.decode() for p in f["paths"][:]] == [str(tmp_path / f"{i}.png") for i in range(3)]
    expected = trainer.method.embed(images.astype("float32") / 255.0).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-2)  # PNG -> JPEG storage of the query images
    out_npy = tmp_path / "split.npy"
    out = script("infer.py", f"--run={logdir}", "--which=last", f"--output={out_npy}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert np.load(out_npy).shape == (trainer.eval_split.num_examples, 16)
    assert not os.path.exists(f"{out_npy}.tmp.npy")
