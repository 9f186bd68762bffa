"""Dataset converters: miniature raw datasets in their true layouts -> dmltf formats / DVML file.

Expected labels, splits and pixels are computed here from the fixture records
(tests/raw_datasets.py) with their own resize arithmetic, not through the converter code.
Budget: ~40 s.
"""
import io
import os
import runpy
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

import raw_datasets as raw
from dmltf.data import open_dataset
from dmltf.data.raw import cars196, cub200, folder, sop
from dmltf.data.raw.common import ImagePolicy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JPEG_MEAN_TOL, JPEG_MAX_TOL = 3.0, 40


# -- independent expectations ----------------------------------------------------------------
def expected_pixels(path, resize, size, box=None):
    img = Image.open(path).convert("RGB")
    if box is not None:
        img = img.crop(tuple(int(round(v)) for v in box))
    w, h = img.size
    if resize == "square":
        img = img.resize((size, size), Image.BILINEAR)
    elif resize == "short_side":
        scale = size / min(w, h)
        img = img.resize((int(round(w * scale)), int(round(h * scale))), Image.BILINEAR)
    return np.asarray(img)


def stored_images(split):
    data = split.read(0, split.num_examples)
    if split.encoding == "raw":
        return list(data)
    return [np.asarray(Image.open(io.BytesIO(bytes(b))).convert("RGB")) for b in data]


def check_images(split, records, resize, size, encoding, crop=None):
    got = stored_images(split)
    assert len(got) == len(records)
    for image, record in zip(got, records):
        want = expected_pixels(record[0], resize, size, crop(record) if crop else None)
        assert image.shape == want.shape, record[0]
        diff = np.abs(image.astype(int) - want.astype(int))
        if encoding == "raw":
            assert diff.max() == 0, record[0]
        else:
            assert diff.mean() < JPEG_MEAN_TOL and diff.max() < JPEG_MAX_TOL, (record[0], diff.mean(), diff.max())


def cars_crop(record):  # 1-based inclusive box -> pixel crop box
    x1, y1, x2, y2 = record[2]
    return (x1 - 1, y1 - 1, x2, y2)


def run(main, argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


FORMATS = [("hdf5", "raw"), ("hdf5", "jpeg"), ("tfrecord", "raw"), ("tfrecord", "jpeg")]


def resize_args(encoding):
    # raw needs one shape per split (square); JPEG keeps the aspect ratio.
    return ("square", 20) if encoding == "raw" else ("short_side", 24)


def output_path(tmp_path, fmt):
    return tmp_path / ("out.h5" if fmt == "hdf5" else "out_tfrecord")


# -- conversions -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    return root, {
        "cars": raw.make_cars_car_ims(str(root / "cars")),
        "devkit": raw.make_cars_devkit(str(root / "devkit")),
        "cub": raw.make_cub(str(root / "cub")),
        "sop": raw.make_sop(str(root / "sop")),
        "folder": raw.make_folder(str(root / "folder")),
    }


@pytest.mark.parametrize("fmt,encoding", FORMATS)
@pytest.mark.parametrize("layout", ["cars", "devkit"])
def test_cars196(raw_root, tmp_path, capsys, fmt, encoding, layout):
    root, expected = raw_root
    resize, size = resize_args(encoding)
    out = output_path(tmp_path, fmt)
    code, stdout, _ = run(cars196.main, ["--root", root / layout, "--output", out, "--format", fmt,
                                         "--encoding", encoding, "--resize", resize, "--size", size,
                                         "--workers", 2], capsys)
    assert code == 0
    ds = open_dataset(str(out))
    assert len(ds.class_names) == 196 and ds.class_names[98] == "Make99 Model Sedan 2007"
    records = {s: sorted(expected[layout][s], key=lambda r: (r[1], r[0])) for s in ("train", "test")}
    for split_name, recs in records.items():
        split = ds.split(split_name)
        assert split.labels.tolist() == [r[1] for r in recs]
        check_images(split, recs, resize, size, encoding)
    assert set(ds.split("train").labels) == {0, 1, 97} and set(ds.split("test").labels) == {98, 99, 195}
    assert ds.metadata["dataset"] == "cars196"
    assert ds.metadata["source_layout"] == ("car_ims" if layout == "cars" else "devkit")
    assert ds.metadata["skipped_images"] == 0 and ds.metadata["resize"] == resize
    n = len(records["train"])
    assert f"train  {n:>6}        3             8,054" in stdout
    assert "WARNING: split 'train' has" in stdout and "the standard split has 8,054 / 98" in stdout


def test_cars196_bbox_crop(raw_root, tmp_path, capsys):
    root, expected = raw_root
    out = tmp_path / "crop.h5"
    code, _, _ = run(cars196.main, ["--root", root / "cars", "--output", out, "--crop_bbox",
                                    "--encoding", "raw", "--resize", "square", "--size", 16], capsys)
    assert code == 0
    recs = sorted(expected["cars"]["test"], key=lambda r: (r[1], r[0]))
    check_images(open_dataset(str(out)).split("test"), recs, "square", 16, "raw", crop=cars_crop)


@pytest.mark.parametrize("fmt,encoding", FORMATS)
def test_cub200(raw_root, tmp_path, capsys, fmt, encoding):
    root, expected = raw_root
    resize, size = resize_args(encoding)
    out = output_path(tmp_path, fmt)
    crop = encoding == "jpeg"  # both with and without the crop over the matrix
    argv = ["--root", root / "cub", "--output", out, "--format", fmt, "--encoding", encoding,
            "--resize", resize, "--size", size] + (["--crop_bbox"] if crop else [])
    code, stdout, _ = run(cub200.main, argv, capsys)
    assert code == 0
    ds = open_dataset(str(out))
    assert len(ds.class_names) == 200 and ds.class_names[100] == "101.Bird_Species_101"
    for split_name in ("train", "test"):
        recs = expected["cub"][split_name]
        split = ds.split(split_name)
        assert split.labels.tolist() == [r[1] for r in recs]
        check_images(split, recs, resize, size, encoding, crop=(lambda r: r[2]) if crop else None)
    assert ds.split("train").labels.max() < 100 <= ds.split("test").labels.min()
    assert ds.metadata["crop_bbox"] is crop
    assert "5,864" in stdout and "5,924" in stdout


@pytest.mark.parametrize("fmt,encoding", FORMATS)
def test_sop(raw_root, tmp_path, capsys, fmt, encoding):
    root, expected = raw_root
    resize, size = resize_args(encoding)
    out = output_path(tmp_path, fmt)
    code, _, _ = run(sop.main, ["--root", root / "sop", "--output", out, "--format", fmt,
                                "--encoding", encoding, "--resize", resize, "--size", size], capsys)
    assert code == 0
    ds = open_dataset(str(out))
    assert ds.class_names[1] == "bicycle_final/111265328556" and len(ds.class_names) == 5
    assert ds.metadata["super_class_names"][:3] == ["bicycle", "unused_2", "chair"]
    assert ds.metadata["super_class_names"][11] == "toaster"
    for split_name in ("train", "test"):
        recs = expected["sop"][split_name]
        split = ds.split(split_name)
        assert split.labels.tolist() == [r[1] for r in recs]
        assert split.extra_labels["super_labels"].tolist() == [r[2] for r in recs]
        check_images(split, recs, resize, size, encoding)


def test_sop_info_files_layout(tmp_path, capsys):
    # Revisiting-DML layout: ROOT/Info_Files/Ebay_*.txt, images under ROOT/images/.
    expected = raw.make_sop(str(tmp_path / "src"))
    base = tmp_path / "src" / "Stanford_Online_Products"
    root = tmp_path / "online_products"
    (root / "Info_Files").mkdir(parents=True)
    for name in ("Ebay_train.txt", "Ebay_test.txt"):
        os.rename(base / name, root / "Info_Files" / name)
    os.rename(base, root / "images")
    code, _, _ = run(sop.main, ["--root", root, "--output", tmp_path / "o.h5"], capsys)
    assert code == 0
    split = open_dataset(str(tmp_path / "o.h5")).split("test")
    assert split.labels.tolist() == [r[1] for r in expected["test"]]


@pytest.mark.parametrize("fmt,encoding", FORMATS)
def test_folder(raw_root, tmp_path, capsys, fmt, encoding):
    root, expected = raw_root
    records, names = expected["folder"]
    resize, size = resize_args(encoding)
    out = output_path(tmp_path, fmt)
    code, stdout, _ = run(folder.main, ["--root", root / "folder", "--output", out, "--format", fmt,
                                        "--encoding", encoding, "--resize", resize, "--size", size,
                                        "--canonical", "cub200"], capsys)
    assert code == 0
    assert "WARNING: split 'test' has 4 images / 2 classes; the standard split has 5,924 / 100" in stdout
    ds = open_dataset(str(out))
    assert ds.class_names == ["Cat", "ant", "bee", "moth", "zebra"] == names
    assert "0   Cat    2      0" in stdout and "4   zebra  2      0" in stdout  # the id table
    for split_name in ("train", "test"):
        split = ds.split(split_name)
        assert split.labels.tolist() == [r[1] for r in records[split_name]]
        check_images(split, records[split_name], resize, size, encoding)


def test_jpeg_without_resize_keeps_file_bytes(raw_root, tmp_path, capsys):
    root, expected = raw_root
    out = tmp_path / "keep.h5"
    code, _, _ = run(cub200.main, ["--root", root / "cub", "--output", out, "--resize", "none"], capsys)
    assert code == 0
    split = open_dataset(str(out)).split("train")
    for data, record in zip(split.read(0, split.num_examples), expected["cub"]["train"]):
        with open(record[0], "rb") as f:
            assert bytes(data) == f.read()


def test_grayscale_source_becomes_rgb(tmp_path, capsys):
    records, _ = raw.make_folder(str(tmp_path / "f"))
    path = records["train"][0][0]
    raw.write_jpeg(path, 7, (20, 30), mode="L")
    out = tmp_path / "g.h5"
    assert run(folder.main, ["--root", tmp_path / "f", "--output", out, "--resize", "none"], capsys)[0] == 0
    image = stored_images(open_dataset(str(out)).split("train"))[0]
    assert image.shape == (30, 20, 3)
    assert np.array_equal(image[..., 0], image[..., 2])


def test_short_side_policy_arithmetic():
    # Independent numbers: 48 x 36 -> short side 24 gives 32 x 24; 30 x 44 -> 24 x 35 (35.2 rounded).
    policy = ImagePolicy(resize="short_side", size=24)
    assert policy._resize(Image.new("RGB", (48, 36))).shape == (24, 32, 3)
    assert policy._resize(Image.new("RGB", (30, 44))).shape == (35, 24, 3)
    assert ImagePolicy(resize="square", size=24).image_shape == (24, 24, 3)
    assert ImagePolicy(resize="short_side").image_shape is None


# -- the DVML reference layout ----------------------------------------------------------------
FUEL_DTYPE = np.dtype([("split", "S5"), ("source", "S7"), ("start", "<i8"), ("stop", "<i8"),
                       ("indices", h5py.ref_dtype), ("available", "?"), ("comment", "S1")])


def fuel_start_stop(h5file, split):
    """Fuel H5PYDataset.get_start_stop, re-written: {source: (start, stop)} of a split."""
    return {row["source"].decode(): (int(row["start"]), int(row["stop"]))
            for row in h5file.attrs["split"] if row["split"].decode() == split}


@pytest.mark.parametrize("layout,with_test", [("cars", True), ("devkit", False)])
def test_dvml_layout_field_by_field(tmp_path, capsys, layout, with_test):
    if layout == "cars":
        expected = raw.make_cars_car_ims(str(tmp_path / "raw"))
    else:  # the Xun-Yang variant: devkit training images only
        expected = raw.make_cars_devkit(str(tmp_path / "raw"), with_test_labels=False)
    out = tmp_path / "cars196.hdf5"
    code, _, err = run(cars196.main, ["--root", tmp_path / "raw", "--output", out, "--layout", "dvml",
                                      "--resample", "bilinear"], capsys)
    assert code == 0, err
    records = sorted(expected["train"] + expected["test"], key=lambda r: (r[1], r[0]))
    n, n_train = len(records), len(expected["train"])
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == ["images", "targets"]
        assert sorted(f.attrs.keys()) == ["split"]
        images, targets = f["images"], f["targets"]
        assert images.dtype == np.uint8 and images.shape == (n, 3, 256, 256)
        assert images.chunks is None and images.compression is None  # contiguous, as h5py wrote it
        assert [d.label for d in images.dims] == ["batch", "channel", "height", "width"]
        assert targets.dtype == np.int32 and targets.shape == (n, 1)
        assert [d.label for d in targets.dims] == ["batch", "class_labels"]
        assert targets[:, 0].tolist() == [r[1] + 1 for r in records]  # original 1-based class ids
        split = f.attrs["split"]
        assert split.dtype == FUEL_DTYPE
        assert [(r["split"], r["source"]) for r in split] == [
            (b"train", b"images"), (b"train", b"targets"), (b"test", b"images"), (b"test", b"targets")]
        assert all(r["available"] and r["comment"] == b"." and not r["indices"] for r in split)
        head = targets[:, 0].tolist().index(99)  # the reference's class_labels.index(99)
        assert head == n_train
        assert fuel_start_stop(f, "train") == {"images": (0, head), "targets": (0, head)}
        assert fuel_start_stop(f, "test") == {"images": (head, n), "targets": (head, n)}
        for i, record in enumerate(records):
            want = expected_pixels(record[0], "square", 256).transpose(2, 0, 1)
            assert np.array_equal(images[i], want), record[0]


def test_dvml_layout_rejects_other_image_options(raw_root, tmp_path, capsys):
    root, _ = raw_root
    code, _, err = run(cars196.main, ["--root", root / "cars", "--output", tmp_path / "d.h5", "--layout", "dvml",
                                      "--resize", "short_side"], capsys)
    assert code == 1 and "--layout dvml fixes --resize square" in err
    assert not os.path.exists(tmp_path / "d.h5")


# -- bad input: a message naming what is wrong, and no output ---------------------------------
def assert_fails(main, argv, capsys, *fragments):
    out = argv[argv.index("--output") + 1]
    code, _, err = run(main, argv, capsys)
    assert code == 1
    for fragment in fragments:
        assert str(fragment) in err, (fragment, err)
    assert not os.path.exists(out)
    leftovers = [p for p in os.listdir(os.path.dirname(out)) if ".partial" in p]
    assert leftovers == []
    return err


def test_missing_annotation_file_and_image_folder(tmp_path, capsys):
    raw.make_cars_car_ims(str(tmp_path / "cars"))
    out = tmp_path / "o.h5"
    os.rename(tmp_path / "cars" / "car_ims", tmp_path / "cars" / "moved")
    assert_fails(cars196.main, ["--root", tmp_path / "cars", "--output", out], capsys,
                 "Cars196 image folder car_ims/", f"expected folder {tmp_path / 'cars' / 'car_ims'}")
    os.remove(tmp_path / "cars" / "cars_annos.mat")
    assert_fails(cars196.main, ["--root", tmp_path / "cars", "--output", out, "--source", "car_ims"], capsys,
                 f"expected file {tmp_path / 'cars' / 'cars_annos.mat'}")
    assert_fails(cars196.main, ["--root", tmp_path / "cars", "--output", out], capsys,
                 "no Cars196 annotations", "cars_annos.mat (with car_ims/)", "devkit/cars_train_annos.mat")
    raw.make_cub(str(tmp_path / "cub"))
    os.remove(tmp_path / "cub" / "CUB_200_2011" / "image_class_labels.txt")
    assert_fails(cub200.main, ["--root", tmp_path / "cub", "--output", out], capsys,
                 f"expected file {tmp_path / 'cub' / 'CUB_200_2011' / 'image_class_labels.txt'}")
    raw.make_sop(str(tmp_path / "sop"))
    os.remove(tmp_path / "sop" / "Stanford_Online_Products" / "Ebay_test.txt")
    assert_fails(sop.main, ["--root", tmp_path / "sop", "--output", out], capsys,
                 f"expected {tmp_path / 'sop' / 'Stanford_Online_Products' / 'Ebay_test.txt'}")
    assert_fails(sop.main, ["--root", tmp_path / "nothing", "--output", out], capsys,
                 "Ebay_train.txt not found", str(tmp_path / "nothing" / "Info_Files"))
    assert_fails(folder.main, ["--root", tmp_path / "cub", "--output", out], capsys,
                 f"expected folder {tmp_path / 'cub' / 'train'}")
    raw.make_cars_devkit(str(tmp_path / "devkit"))
    assert_fails(cars196.main, ["--root", tmp_path / "devkit", "--output", out, "--test_annotations",
                                tmp_path / "nowhere.mat"], capsys,
                 f"(--test_annotations) not found: expected file {tmp_path / 'nowhere.mat'}")


def test_mat_without_expected_fields_lists_its_fields(tmp_path, capsys):
    fields = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "label", "test")
    raw.make_cars_car_ims(str(tmp_path / "cars"), fields=fields)
    err = assert_fails(cars196.main, ["--root", tmp_path / "cars", "--output", tmp_path / "o.h5"], capsys,
                       "cars_annos.mat: 'annotations' lacks the field(s) ['class']")
    assert "its fields: ['relative_im_path', 'bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'label', 'test']" in err
    scipy.io.savemat(tmp_path / "cars" / "cars_annos.mat", {"annos": np.zeros(3)})
    assert_fails(cars196.main, ["--root", tmp_path / "cars", "--output", tmp_path / "o.h5"], capsys,
                 "has no variable 'annotations'; its variables: ['annos']")
    with open(tmp_path / "cars" / "cars_annos.mat", "wb") as f:
        f.write(b"not a mat file")
    assert_fails(cars196.main, ["--root", tmp_path / "cars", "--output", tmp_path / "o.h5"], capsys,
                 "cars_annos.mat is not a readable MATLAB file")


def test_bad_text_annotations(tmp_path, capsys):
    raw.make_sop(str(tmp_path / "sop"))
    path = tmp_path / "sop" / "Stanford_Online_Products" / "Ebay_train.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["id class path"] + lines[1:]))
    assert_fails(sop.main, ["--root", tmp_path / "sop", "--output", tmp_path / "o.h5"], capsys,
                 "expected the header 'image_id class_id super_class_id path', found 'id class path'")
    path.write_text("\n".join(lines[:2] + ["3 two 1 bicycle_final/x_0.JPG"]))
    assert_fails(sop.main, ["--root", tmp_path / "sop", "--output", tmp_path / "o.h5"], capsys,
                 f"{path}: expected an integer, got 'two'")
    raw.make_folder(str(tmp_path / "f"))
    os.makedirs(tmp_path / "f" / "test" / "empty")
    assert_fails(folder.main, ["--root", tmp_path / "f", "--output", tmp_path / "o.h5"], capsys,
                 f"class folder {tmp_path / 'f' / 'test' / 'empty'} has no images")


@pytest.mark.parametrize("fmt", ["hdf5", "tfrecord", "dvml"])
def test_unreadable_images_fail_unless_skip_bad(tmp_path, capsys, fmt):
    expected = raw.make_cars_car_ims(str(tmp_path / "cars"))
    truncated, garbled = expected["train"][1][0], expected["test"][2][0]
    missing = expected["test"][0][0]
    raw.truncate(truncated)
    raw.garble(garbled)
    os.remove(missing)
    out = tmp_path / ("o.h5" if fmt != "tfrecord" else "o_tfr")
    options = ["--layout", "dvml", "--resample", "bilinear"] if fmt == "dvml" else ["--format", fmt]
    argv = ["--root", tmp_path / "cars", "--output", out] + options
    err = assert_fails(cars196.main, argv, capsys, "3 unreadable image(s)", f"{truncated}: OSError", f"{garbled}: UnidentifiedImageError", f"{missing}: FileNotFoundError",
                       "--skip_bad")
    assert err.count("unreadable image(s)") == 1
    code, stdout, err = run(cars196.main, argv + ["--skip_bad"], capsys)
    assert code == 0
    assert "skipped 3 unreadable image(s)" in stdout and f"skipped unreadable image {garbled}" in err
    kept = {s: [r for r in expected[s] if r[0] not in (truncated, garbled, missing)] for s in ("train", "test")}
    if fmt == "dvml":
        with h5py.File(out, "r") as f:
            assert f["targets"][:, 0].tolist() == [r[1] + 1 for r in kept["train"] + kept["test"]]
            assert f["images"].shape[0] == f["targets"].shape[0] and f["images"].chunks is None
            assert fuel_start_stop(f, "test")["images"] == (len(kept["train"]), len(kept["train"]) + len(kept["test"]))
        return
    ds = open_dataset(str(out))
    assert ds.metadata["skipped_images"] == 3
    assert ds.metadata["skipped_paths"] == sorted([truncated, garbled, missing])
    for s in ("train", "test"):
        assert ds.split(s).labels.tolist() == [r[1] for r in kept[s]]
    assert f"train  {len(kept['train']):>6}" in stdout


@pytest.mark.parametrize("fmt", ["hdf5", "tfrecord", "dvml"])
def test_interrupted_run_leaves_nothing(raw_root, tmp_path, capsys, monkeypatch, fmt):
    root, _ = raw_root
    calls = []
    load = ImagePolicy.load

    def interrupted(self, example):
        calls.append(example)
        if len(calls) == 8:  # in the test split, after the train split was written
            raise KeyboardInterrupt
        return load(self, example)

    monkeypatch.setattr(ImagePolicy, "load", interrupted)
    out = tmp_path / "o"
    options = ["--layout", "dvml"] if fmt == "dvml" else ["--format", fmt]
    with pytest.raises(KeyboardInterrupt):
        cars196.main(["--root", str(root / "cars"), "--output", str(out), "--workers", "1"] + options)
    assert os.listdir(tmp_path) == []


def test_existing_output_needs_overwrite(raw_root, tmp_path, capsys):
    root, _ = raw_root
    out = tmp_path / "o.h5"
    out.write_bytes(b"precious")
    code, _, err = run(cub200.main, ["--root", root / "cub", "--output", out], capsys)
    assert code == 1 and f"{out} already exists; pass --overwrite" in err
    assert out.read_bytes() == b"precious"
    code, _, _ = run(cub200.main, ["--root", root / "cub", "--output", out, "--overwrite"], capsys)
    assert code == 0 and open_dataset(str(out)).split("train").num_examples == 6


def test_raw_encoding_needs_square(raw_root, tmp_path, capsys):
    root, _ = raw_root
    code, _, err = run(sop.main, ["--root", root / "sop", "--output", tmp_path / "o.h5", "--encoding", "raw"],
                       capsys)
    assert code == 1 and "--encoding raw stores one image shape per split and needs --resize square" in err


# -- the scripts themselves --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cars196", "cub200", "sop", "folder", "tfds"])
def test_script_help(name, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"{name}_converter.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(os.path.join(REPO, "datasets", f"{name}_converter.py"), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--output" in out and "--skip_bad" in out and "--resize {square,short_side,none}" in out


def test_script_runs_as_a_program(raw_root, tmp_path):
    root, _ = raw_root
    out = tmp_path / "cars.h5"
    result = subprocess.run([sys.executable, os.path.join(REPO, "datasets", "cars196_converter.py"),
                             "--root", str(root / "cars"), "--output", str(out)],
                            capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "canonical images" in result.stdout
    assert open_dataset(str(out)).split("test").num_examples == 6


# -- a prepared TensorFlow Datasets copy --------------------------------------------------------
TFDS_NAMES = {"cars196": 98, "caltech_birds2011": 100, "stanford_online_products": 11318}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    pytest.importorskip("tensorflow_datasets")
    # tensorflow-datasets 4.9.10 writes (store_as_tfds_dataset) through importlib_resources
    # without depending on it; reading a copy does not need it.
    pytest.importorskip("importlib_resources")
    data_dir = tmp_path_factory.mktemp("tfds")
    return data_dir, {name: raw.make_tfds(str(data_dir), name) for name in TFDS_NAMES}


@pytest.mark.parametrize("name", list(TFDS_NAMES))
def test_tfds_copy_split_by_class(tfds_dir, tmp_path, capsys, name):
    from dmltf.data.raw import tfds_source

    data_dir, expected = tfds_dir
    records = expected[name]["train"] + expected[name]["test"]  # TFDS order: its train, then test
    fmt, encoding, resize = ("tfrecord", "raw", "square") if name == "cars196" else ("hdf5", "jpeg", "none")
    out = output_path(tmp_path, fmt)
    code, stdout, err = run(tfds_source.main, ["--name", name, "--root", data_dir, "--output", out, "--format", fmt,
                                               "--encoding", encoding, "--resize", resize, "--size", 16], capsys)
    assert code == 0, err
    ds = open_dataset(str(out))
    for split_name in ("train", "test"):
        in_split = [r for r in records if (r[1] < TFDS_NAMES[name]) == (split_name == "train")]
        split = ds.split(split_name)
        assert split.labels.tolist() == [r[1] for r in in_split]
        if name == "stanford_online_products":
            assert split.extra_labels["super_labels"].tolist() == [r[2] for r in in_split]
        for image, record in zip(stored_images(split), in_split):
            want = record[0] if resize == "none" else np.asarray(Image.fromarray(record[0]).resize((16, 16)))
            assert image.shape == want.shape
            assert np.abs(image.astype(int) - want.astype(int)).mean() < 2 * JPEG_MEAN_TOL  # TFDS stores JPEG
    assert ds.metadata["source_layout"] == f"tfds:{name}" and ds.metadata["skipped_images"] == 0
    assert "canonical images" in stdout and "WARNING" in stdout
    if name == "caltech_birds2011":
        assert ds.class_names[199] == "bird_200"


@pytest.mark.parametrize("name", ["cars196", "caltech_birds2011"])
def test_tfds_copy_classification_rule_keeps_the_tfds_splits(tfds_dir, tmp_path, capsys, name):
    """--split_rule classification (the dml-tf seed's split): TFDS's own train and test, in order."""
    from dmltf.data.raw import tfds_source

    data_dir, expected = tfds_dir
    out = output_path(tmp_path, "hdf5")
    code, _, err = run(tfds_source.main, ["--name", name, "--root", data_dir, "--output", out, "--resize", "none",
                                          "--split_rule", "classification"], capsys)
    assert code == 0, err
    ds = open_dataset(str(out))
    for split_name in ("train", "test"):
        assert ds.split(split_name).labels.tolist() == [r[1] for r in expected[name][split_name]]
    assert ds.metadata["split_rule"].startswith("classification")
    with pytest.raises(ValueError, match="unknown split rule 'by_class'"):
        tfds_source.read(name, data_dir, "by_class")


def test_tfds_copy_missing_never_downloads(tmp_path, capsys):
    pytest.importorskip("tensorflow_datasets")
    from dmltf.data.raw import tfds_source

    empty = tmp_path / "tfds"
    empty.mkdir()
    assert_fails(tfds_source.main, ["--name", "cars196", "--root", empty, "--output", tmp_path / "o.h5"], capsys,
                 "no prepared TensorFlow Datasets copy of cars196", str(empty / "cars196" / "<version>"),
                 "dmltf never downloads")
    assert os.listdir(empty) == []


def test_dvml_layout_resizes_like_opencv_when_installed(tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    expected = raw.make_cars_car_ims(str(tmp_path / "raw"))
    out = tmp_path / "cars196.hdf5"
    code, _, err = run(cars196.main, ["--root", tmp_path / "raw", "--output", out, "--layout", "dvml"], capsys)
    assert code == 0, err
    records = sorted(expected["train"] + expected["test"], key=lambda r: (r[1], r[0]))
    with h5py.File(out, "r") as f:
        for i, record in enumerate(records):
            # The reference's preprocess(): imread (BGR) -> RGB -> cv2.resize to 256 x 256 -> CHW.
            rgb = cv2.cvtColor(cv2.imread(record[0], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            want = np.transpose(cv2.resize(rgb, (256, 256)), (2, 0, 1))
            assert np.array_equal(f["images"][i], want), record[0]


# -- channels, native size and notices (issue 18 item 1) ---------------------------------------
def make_png_tree(root, size=(28, 28), mode="L", odd=None):
    """ROOT/{train,test}/<class>/<k>.png of ``mode`` images of ``size`` (W, H); ``odd``: (path
    suffix, size) of one image of another size. Returns {split: [(path, label), ...]} in stored order."""
    records = {"train": [], "test": []}
    for label, (split, name) in enumerate((("train", "a"), ("train", "b"), ("test", "c"), ("test", "d"))):
        for k in range(2):
            path = os.path.join(root, split, name, f"{k}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            this = odd[1] if odd and path.endswith(odd[0]) else size
            Image.fromarray(raw.image_pixels(3 * label + k, this)).convert(mode).save(path, format="PNG")
            records[split].append((path, label))
    return records


def test_grayscale_tree_converts_to_native_grayscale_raw(tmp_path, capsys):
    records = make_png_tree(str(tmp_path / "f"))
    out = tmp_path / "g.h5"
    code, _, err = run(folder.main, ["--root", tmp_path / "f", "--output", out, "--encoding", "raw"], capsys)
    assert code == 0, err
    ds = open_dataset(str(out))
    assert ds.metadata["channels"] == 1 and ds.metadata["resize"] == "none"
    for name, recs in records.items():
        split = ds.split(name)
        assert split.image_shape == (28, 28, 1)
        for image, (path, _) in zip(split.read(0, split.num_examples), recs):
            assert np.array_equal(image[..., 0], np.asarray(Image.open(path)))
    assert "note:" not in err  # nothing upscaled, nothing re-encoded


def test_channels_flag_overrides_the_images(tmp_path, capsys):
    gray = make_png_tree(str(tmp_path / "gray"))
    rgb = make_png_tree(str(tmp_path / "rgb"), mode="RGB")
    for root, channels, recs in ((tmp_path / "gray", 3, gray), (tmp_path / "rgb", 1, rgb)):
        out = tmp_path / f"{channels}.h5"
        code, _, err = run(folder.main, ["--root", root, "--output", out, "--encoding", "raw",
                                         "--channels", channels], capsys)
        assert code == 0, err
        split = open_dataset(str(out)).split("train")
        assert split.image_shape == (28, 28, channels)
        want = np.asarray(Image.open(recs["train"][0][0]).convert("RGB" if channels == 3 else "L"))
        assert np.array_equal(split.read(0, 1)[0].reshape(want.shape), want)
    # An RGB tree keeps 3 channels by default.
    code, _, err = run(folder.main, ["--root", tmp_path / "rgb", "--output", tmp_path / "d.h5", "--encoding", "raw"],
                       capsys)
    assert code == 0 and open_dataset(str(tmp_path / "d.h5")).split("test").image_shape == (28, 28, 3)


def test_raw_native_size_names_the_first_image_of_another_shape(tmp_path, capsys):
    make_png_tree(str(tmp_path / "f"), odd=(os.path.join("c", "1.png"), (30, 28)))
    out = tmp_path / "o.h5"
    code, _, err = run(folder.main, ["--root", tmp_path / "f", "--output", out, "--encoding", "raw",
                                     "--resize", "none"], capsys)
    assert code == 1 and not os.path.exists(out)
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: --encoding raw stores one image shape per split")
    assert f"{os.path.join('test', 'c', '1.png')} is 30x28" in line and "0.png 28x28" in line
    # --resize square makes them one shape.
    code, _, err = run(folder.main, ["--root", tmp_path / "f", "--output", out, "--encoding", "raw",
                                     "--resize", "square", "--size", 28], capsys)
    assert code == 0 and open_dataset(str(out)).split("test").image_shape == (28, 28, 1)


def test_defaults_say_they_upscale_and_reencode(tmp_path, capsys):
    make_png_tree(str(tmp_path / "f"), mode="RGB")
    code, _, err = run(folder.main, ["--root", tmp_path / "f", "--output", tmp_path / "j.h5"], capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 2, err
    assert "8 of 8 images are upscaled" in notes[0] and "28x28 -> 256x256" in notes[0]
    assert "8 PNG image(s)" in notes[1] and "re-encoded as JPEG" in notes[1]
    # Images at or above the size: no upscale note.
    code, _, err = run(folder.main, ["--root", tmp_path / "f", "--output", tmp_path / "k.h5", "--size", 20], capsys)
    assert code == 0 and "upscaled" not in err and "re-encoded as JPEG" in err


def test_grayscale_jpeg_split_reads_one_channel(tmp_path, capsys):
    make_png_tree(str(tmp_path / "f"))
    out = tmp_path / "j.h5"
    code, _, err = run(folder.main, ["--root", tmp_path / "f", "--output", out, "--resize", "none"], capsys)
    assert code == 0, err
    split = open_dataset(str(out)).split("train")
    assert split.image_shape == (28, 28, 1)
    assert Image.open(io.BytesIO(bytes(split.read(0, 1)[0]))).mode == "L"


def test_dvml_layout_rejects_one_channel(raw_root, tmp_path, capsys):
    root, _ = raw_root
    code, _, err = run(cars196.main, ["--root", root / "cars", "--output", tmp_path / "d.h5", "--layout", "dvml",
                                      "--channels", "1"], capsys)
    assert code == 1 and "--layout dvml fixes --channels 3" in err


def test_converters_import_and_write_hdf5_without_tensorflow(raw_root, tmp_path):
    """The four converter scripts and a whole HDF5 conversion never import TensorFlow (3-9 s of
    start-up for nothing); only TFRecord output needs it (dmltf/data/raw/common.py run_cli). One
    fresh interpreter: this one has TensorFlow loaded already."""
    root, _ = raw_root
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "folder.h5"
    code = (
        "import runpy, sys\n"
        "for name in ('cars196', 'cub200', 'sop', 'folder'):\n"
        "    main = runpy.run_path(f'datasets/{name}_converter.py', run_name='imported')['main']\n"
        f"assert main(['--root', {str(root / 'folder')!r}, '--output', {str(out)!r}, '--size', '16']) == 0\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert open_dataset(str(out)).split("train").num_examples > 0
