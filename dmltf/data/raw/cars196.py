"""Cars196 (Stanford Cars) from its raw layouts, split by class: 1-98 train, 99-196 test.

Layouts (METHODS.md sections 1.6 and 7; the .mat files as Stanford ships them):
  car_ims  ROOT/car_ims/000001.jpg ... + ROOT/cars_annos.mat: ``annotations``, a 1 x 16,185
           struct array with fields relative_im_path, bbox_x1, bbox_y1, bbox_x2, bbox_y2, class,
           test (``test``, the classification split, is ignored), and ``class_names`` (1 x 196).
  devkit   ROOT/cars_train/00001.jpg ... + cars_train_annos.mat (in ROOT or ROOT/devkit):
           fields bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname; class names from
           cars_meta.mat. The test images (cars_test/) are included when a labelled
           cars_test_annos_withlabels.mat is found (cars_test_annos.mat has no classes);
           without it only the 8,144 training images are split by class, as the Xun-Yang
           DVML port did.
Rows are sorted by (class, path), the order of the DVML converter. Boxes are 1-based and
inclusive; ``--crop_bbox`` crops to them. Labels are class - 1.

References: Xun-Yang/Deep-Variational-Metric-Learning and wzzheng/HDML
``datasets/cars196_converter.py`` (split "labels 1~98 for train, 99~196 for test"),
tjddus9597/Proxy-Anchor-CVPR2020 ``code/dataset/cars.py``. Deviations: images are decoded
with Pillow (the converters used OpenCV; both wrap libjpeg) and the resize policy is a flag
(the references always resize to 256 x 256; ``--layout dvml`` does too).
"""
import os
import sys

import numpy as np
import scipy.io

from dmltf.data.raw.common import CANONICAL, Example, LayoutError, find_first, make_parser, require, \
    run_cli, zero_shot_split

ANNOS_FIELDS = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
DEVKIT_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
NUM_CLASSES, NUM_TRAIN_CLASSES = 196, 98


def _load_mat(path):
    try:
        return scipy.io.loadmat(path)
    except Exception as e:  # scipy raises ValueError / TypeError / MatReadError for non-MAT data
        raise LayoutError(f"{path} is not a readable MATLAB file ({type(e).__name__}: {e})") from None


def _variables(mat):
    return sorted(k for k in mat if not k.startswith("__"))


def load_struct_array(path, variable, fields):
    """The struct array ``variable`` of a .mat file as a list of {field: int or str}."""
    mat = _load_mat(path)
    if variable not in mat:
        raise LayoutError(f"{path} has no variable {variable!r}; its variables: {_variables(mat)}")
    array = mat[variable]
    names = array.dtype.names or ()
    missing = [f for f in fields if f not in names]
    if missing:
        raise LayoutError(f"{path}: {variable!r} lacks the field(s) {missing}; its fields: {list(names)}")
    rows = []
    for index, element in enumerate(array.ravel()):
        row = {}
        for field in fields:
            value = np.asarray(element[field])
            if value.size != 1:
                raise LayoutError(f"{path}: {variable}[{index}].{field} holds {value.size} values, expected one")
            value = value.ravel()[0]
            # Strings arrive as <U arrays, numbers as uint8/uint16 (or double): MATLAB's storage.
            row[field] = str(value) if isinstance(value, str) else int(value)
        rows.append(row)
    return rows


def load_class_names(path):
    """``class_names`` (a 1 x 196 cell array of strings) of cars_annos.mat / cars_meta.mat."""
    mat = _load_mat(path)
    if "class_names" not in mat:
        raise LayoutError(f"{path} has no variable 'class_names'; its variables: {_variables(mat)}")
    names = [str(np.asarray(cell).ravel()[0]) for cell in mat["class_names"].ravel()]
    if len(names) != NUM_CLASSES:
        raise LayoutError(f"{path}: class_names has {len(names)} entries, expected {NUM_CLASSES}")
    return names


def _examples(rows, path_of, annotations):
    examples = []
    for index, row in enumerate(rows):
        if not 1 <= row["class"] <= NUM_CLASSES:
            raise LayoutError(f"{annotations}: annotations[{index}].class = {row['class']}, expected 1..{NUM_CLASSES}")
        box = (row["bbox_x1"] - 1, row["bbox_y1"] - 1, row["bbox_x2"], row["bbox_y2"])
        examples.append(Example(path_of(row), row["class"] - 1, box=box))
    return examples


def read_car_ims(root):
    """(examples, class_names, notes) of the car_ims + cars_annos.mat layout."""
    annotations = require(os.path.join(root, "cars_annos.mat"), "Cars196 annotation file cars_annos.mat")
    require(os.path.join(root, "car_ims"), "Cars196 image folder car_ims/ (from car_ims.tgz)", is_dir=True)
    rows = load_struct_array(annotations, "annotations", ANNOS_FIELDS)
    examples = _examples(rows, lambda r: os.path.join(root, r["relative_im_path"]), annotations)
    return examples, load_class_names(annotations), {"annotations": [annotations]}


def read_devkit(root, test_annotations=None):
    """(examples, class_names, notes) of the devkit layout (cars_train/, optionally cars_test/)."""
    places = (root, os.path.join(root, "devkit"))
    train_annotations = find_first([os.path.join(p, "cars_train_annos.mat") for p in places],
                                   "Cars196 devkit annotation file cars_train_annos.mat")
    train_dir = require(os.path.join(root, "cars_train"), "Cars196 image folder cars_train/", is_dir=True)
    rows = load_struct_array(train_annotations, "annotations", DEVKIT_FIELDS)
    examples = _examples(rows, lambda r: os.path.join(train_dir, r["fname"]), train_annotations)
    used = [train_annotations]
    if test_annotations:  # named explicitly: it must exist
        candidates = [require(test_annotations, "Cars196 labelled test annotation file (--test_annotations)")]
    else:
        candidates = [os.path.join(p, "cars_test_annos_withlabels.mat") for p in places]
    test_annotations = next((p for p in candidates if os.path.isfile(p)), None)
    if test_annotations:
        test_dir = require(os.path.join(root, "cars_test"), "Cars196 image folder cars_test/", is_dir=True)
        rows = load_struct_array(test_annotations, "annotations", DEVKIT_FIELDS)
        examples += _examples(rows, lambda r: os.path.join(test_dir, r["fname"]), test_annotations)
        used.append(test_annotations)
    else:
        print("note: no labelled test annotations (looked for " + ", ".join(candidates) + "); converting "
              "the cars_train/ images only (the Xun-Yang DVML variant), so the counts differ from the "
              "standard split", file=sys.stderr)
    meta = next((p for p in (os.path.join(q, "cars_meta.mat") for q in places) if os.path.isfile(p)), None)
    class_names = load_class_names(meta) if meta else [str(c) for c in range(1, NUM_CLASSES + 1)]
    return examples, class_names, {"annotations": used}


def read(root, source="auto", test_annotations=None):
    """(splits, class_names, metadata) of a Cars196 download under ``root``."""
    if source == "auto":
        if os.path.isfile(os.path.join(root, "cars_annos.mat")):
            source = "car_ims"
        elif any(os.path.isfile(os.path.join(p, "cars_train_annos.mat")) for p in (root, os.path.join(root, "devkit"))):
            source = "devkit"
        else:
            raise LayoutError(f"no Cars196 annotations under {root}: expected {root}/cars_annos.mat (with car_ims/) "
                              f"or {root}/cars_train_annos.mat or {root}/devkit/cars_train_annos.mat "
                              "(with cars_train/)")
    if source == "car_ims":
        examples, class_names, notes = read_car_ims(root)
    else:
        examples, class_names, notes = read_devkit(root, test_annotations)
    metadata = dict(notes, dataset="cars196", source_layout=source,
                    split_rule="zero-shot by class: classes 1-98 train, 99-196 test; label = class - 1")
    return zero_shot_split(examples, NUM_TRAIN_CLASSES), class_names, metadata


def main(argv=None):
    parser = make_parser("Convert Cars196 to the dmltf HDF5/TFRecord format, or the DVML reference file.\n\n"
                         + __doc__.split("\n\n", 1)[1], dvml_layout=True)
    parser.add_argument("--source", choices=("auto", "car_ims", "devkit"), default="auto",
                        help="raw layout under --root (auto: car_ims if cars_annos.mat exists)")
    parser.add_argument("--test_annotations", help="devkit layout: the labelled test .mat "
                                                   "(default: cars_test_annos_withlabels.mat in ROOT or ROOT/devkit)")

    def build(args):
        splits, class_names, metadata = read(args.root, args.source, args.test_annotations)
        return splits, class_names, metadata, CANONICAL["cars196"]

    return run_cli(parser, build, argv)
