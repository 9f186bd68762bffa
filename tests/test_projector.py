"""The projector files as TensorBoard shows them: served by TensorBoard's own projector plugin
(tensorboard/plugins/projector/projector_plugin.py), then checked with the rules of its browser
app (vz-projector, shipped as tensorboard/plugins/projector/tf_projector_plugin/
projector_binary.js). The rules are written here from those sources, not from dmltf's writer:

- the config lists the tensor with a 2-D ``tensorShape`` of more than one row and column (the
  app hides any other tensor), and the tensor route serves exactly that many float32 values;
- metadata: blank lines are skipped; a first line holding a tab is the header (column names),
  otherwise every line is a point of the one column "label"; rows must equal the tensor rows;
- sprite: at most 8192 px on each side; ``singleImageDim`` is (width, height), sprites per
  row = width / dim[0] and per column = height / dim[1] (whole numbers, or the cells slip),
  point i is the cell at row i // per_row, column i % per_row.
"""
import io
import json

import numpy as np
from PIL import Image
from tensorboard.plugins import base_plugin
from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
from werkzeug.test import Client

import config
from dmltf.training.experiment import run
from dmltf.training.summaries import write_projector

MAX_SPRITE_SIDE = 8192  # vz-projector's limit on the sprite image


class _NoRuns:
    """A data provider with no event runs: the plugin then serves the logdir itself as run "."."""

    def list_runs(self, ctx, experiment_id):
        return []


def _serve(logdir):
    """{route: (status, body)} of the plugin routes the projector page calls for run "."."""
    apps = ProjectorPlugin(base_plugin.TBContext(logdir=str(logdir), data_provider=_NoRuns())).get_plugin_apps()
    query = "run=.&name=embeddings"  # num_rows: what the page asks for
    urls = {"/runs": "", "/info": "run=.", "/tensor": f"{query}&num_rows=100000",
            "/metadata": f"{query}&num_rows=100000", "/sprite_image": query}
    served = {}
    for route, args in urls.items():
        response = Client(apps[route]).get(f"/?{args}")
        served[route] = (response.status_code, response.get_data())
    return served


def _parse_metadata(text):
    """vz-projector's metadata parser: (column names, rows)."""
    columns, rows = ["label"], []
    for i, line in enumerate(line for line in text.split("\n") if line.strip()):
        if i == 0 and "\t" in line:
            columns = line.split("\t")
            continue
        rows.append(line.split("\t"))
    return columns, rows


def _load_as_the_projector(logdir):
    """(tensor, metadata columns, metadata rows, sprite cells or None) as the projector app has them,
    asserting each of its rules on the way."""
    served = _serve(logdir)
    assert served["/runs"] == (200, b'["."]')
    status, body = served["/info"]
    assert status == 200, body
    (embedding,) = json.loads(body)["embeddings"]
    shape = embedding["tensorShape"]
    assert len(shape) == 2 and shape[0] > 1 and shape[1] > 1, shape

    status, body = served["/tensor"]
    assert status == 200, body
    tensor = np.frombuffer(body, np.float32)
    assert tensor.size == shape[0] * shape[1], (tensor.size, shape)
    tensor = tensor.reshape(shape)

    status, body = served["/metadata"]
    assert status == 200, body
    columns, rows = _parse_metadata(body.decode())
    assert len(rows) == shape[0], f"{shape[0]} tensor rows, {len(rows)} metadata rows (columns {columns})"
    assert all(len(row) == len(columns) for row in rows)

    if "sprite" not in embedding:
        return tensor, columns, rows, None
    status, body = served["/sprite_image"]
    assert status == 200, body
    sprite = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    height, width = sprite.shape[:2]
    assert width <= MAX_SPRITE_SIDE and height <= MAX_SPRITE_SIDE, (width, height)
    cell_w, cell_h = embedding["sprite"]["singleImageDim"]
    assert width % cell_w == 0 and height % cell_h == 0, (width, height, cell_w, cell_h)
    per_row, per_column = width // cell_w, height // cell_h
    assert per_row * per_column >= shape[0]
    cells = [sprite[r * cell_h:(r + 1) * cell_h, c * cell_w:(c + 1) * cell_w]
             for r, c in (divmod(i, per_row) for i in range(shape[0]))]
    return tensor, columns, rows, np.stack(cells)


def test_the_projector_loads_points_labels_and_their_images(tmp_path):
    rng = np.random.default_rng(0)
    n = 37  # not a square: the last sprite row is partly empty
    embeddings = rng.normal(size=(n, 5)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 256, (n, 6, 10, 1), dtype=np.uint8)  # not square: (width, height) order matters
    write_projector(str(tmp_path), embeddings, labels, images)
    tensor, columns, rows, cells = _load_as_the_projector(tmp_path)
    np.testing.assert_allclose(tensor, embeddings, rtol=1e-5)
    assert columns == ["label"] and [int(r[0]) for r in rows] == labels.tolist()
    np.testing.assert_array_equal(cells, np.repeat(images, 3, axis=-1))


def test_a_sprite_too_large_for_the_projector_is_shrunk(tmp_path):
    n = 3  # a 2 x 2 sheet of 5000 px wide images: 10000 px, above the projector's limit
    images = np.stack([np.full((2, 5000, 1), 60 * (i + 1), np.uint8) for i in range(n)])
    write_projector(str(tmp_path), np.eye(n, 4, dtype=np.float32), np.arange(n), images)
    _, _, _, cells = _load_as_the_projector(tmp_path)
    for i, cell in enumerate(cells):
        assert np.abs(cell.astype(int) - 60 * (i + 1)).max() <= 1, i


def test_without_images_there_is_no_sprite(tmp_path):
    write_projector(str(tmp_path), np.ones((4, 3), np.float32), np.arange(4))
    *_, cells = _load_as_the_projector(tmp_path)
    assert cells is None


def test_a_training_run_writes_a_projector_that_loads(tmp_path):
    cfg = config.make(dataset="digits", backbone="small_cnn", embedding_dim=8, classes_per_batch=10,
                      samples_per_class=2, epochs=1, max_steps_per_epoch=1, eval_every=0, progress="none",
                      export=False, logdir=str(tmp_path), tb_neighbours=0, tb_projector_points=100,
                      eval_metrics=["map@r"], optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=0.01)
    trainer, _ = run(cfg)
    labels = trainer.eval_split.load().labels[:100]
    tensor, _, rows, cells = _load_as_the_projector(tmp_path)
    assert tensor.shape == (100, 8) and [int(r[0]) for r in rows] == labels.tolist()
    assert cells.shape == (100, 8, 8, 3)
