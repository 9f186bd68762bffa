"""Miniature raw datasets in the true on-disk layouts, for the converter tests.

Each builder writes small JPEGs (a smooth gradient tinted by the image's index, so every image
is distinct and survives JPEG within a few levels) and the annotation files exactly as the
real downloads store them, and returns the expected records as
``{split: [(image_path, label, extra), ...]}`` sorted the way the converters sort them.

Cars .mat files: ``annotations`` is a 1 x N MATLAB struct array with the fields in the real
storage order; strings are char arrays and numbers come back from ``scipy.io.loadmat`` as
uint8 when they fit and uint16 otherwise, as the Stanford files do (e.g. cars_annos.mat[0] is
('car_ims/000001.jpg', 112 uint8, 7 uint8, 853 uint16, 717 uint16, 1 uint8, 0 uint8)).
"""
import os

import numpy as np
import scipy.io
from PIL import Image

CARS_CLASSES = (1, 2, 98, 99, 100, 196)  # both sides of the 98 / 99 boundary and the ends
CUB_CLASSES = (1, 2, 100, 101, 200)
SIZES = ((48, 36), (30, 44), (40, 40))  # (width, height): landscape, portrait, square


def image_pixels(index, size):
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    tint = np.array([(37 * index) % 200, (91 * index + 50) % 200, (53 * index + 100) % 200])
    pixels = tint + (x[..., None] * 40 // w) + (y[..., None] * 15 // h)
    return pixels.astype(np.uint8)


def write_jpeg(path, index, size=None, mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(image_pixels(index, size or SIZES[index % len(SIZES)]))
    img.convert(mode).save(path, format="JPEG", quality=95)
    return path


def _mat_number(value):
    return np.array([[value]], dtype=np.uint8 if value < 256 else np.uint16)


def write_struct_mat(path, fields, rows, extra=None):
    """``annotations`` = 1 x N struct array of ``rows`` (tuples in field order)."""
    annotations = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for field, value in zip(fields, row):
            annotations[field][0, i] = value if isinstance(value, str) else _mat_number(value)
    scipy.io.savemat(path, dict(annotations=annotations, **(extra or {})), do_compression=True)


def cars_class_names():
    names = np.empty((1, 196), dtype=object)
    for c in range(196):
        names[0, c] = f"Make{c + 1} Model Sedan {2000 + c % 13}"
    return names


def _box(index, size):
    w, h = size
    return 2 + index % 3, 3, w - 1, h - 2 - index % 2  # 1-based inclusive x1, y1, x2, y2


def make_cars_car_ims(root, per_class=2, fields=None):
    """ROOT/car_ims/NNNNNN.jpg + ROOT/cars_annos.mat (+ class_names). Returns expected splits.

    ``fields`` renames the seven struct fields (to build a file with a wrong layout)."""
    fields = fields or ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
    rows, expected = [], {"train": [], "test": []}
    index = 0
    for c in CARS_CLASSES:
        for k in range(per_class):
            index += 1
            rel = f"car_ims/{index:06d}.jpg"
            # One image wider than 255 px, so its x2 is stored as uint16 as in the real file.
            size = (264, 40) if index == 1 else SIZES[index % len(SIZES)]
            write_jpeg(os.path.join(root, rel), index, size)
            box = _box(index, size)
            rows.append((rel,) + box + (c, k % 2))
            expected["train" if c <= 98 else "test"].append((os.path.join(root, rel), c - 1, box))
    # Stored out of class order, so the converter's sort by (class, path) is exercised.
    rows = rows[::-1]
    write_struct_mat(os.path.join(root, "cars_annos.mat"), fields, rows, {"class_names": cars_class_names()})
    return expected


def make_cars_devkit(root, per_class=2, with_test_labels=True):
    """ROOT/cars_train/, ROOT/cars_test/, ROOT/devkit/{cars_train_annos,cars_test_annos,cars_meta}.mat
    and ROOT/cars_test_annos_withlabels.mat (if ``with_test_labels``). Returns expected splits."""
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    os.makedirs(os.path.join(root, "devkit"), exist_ok=True)
    expected = {"train": [], "test": []}
    index = 0
    for folder in ("cars_train", "cars_test"):
        rows = []
        for c in CARS_CLASSES:
            for _ in range(per_class):
                index += 1
                fname = f"{len(rows) + 1:05d}.jpg"
                size = SIZES[index % len(SIZES)]
                path = write_jpeg(os.path.join(root, folder, fname), index, size)
                box = _box(index, size)
                rows.append(box + (c, fname))
                if folder == "cars_train" or with_test_labels:
                    expected["train" if c <= 98 else "test"].append((path, c - 1, box))
        rows = rows[::-1]
        if folder == "cars_train":
            write_struct_mat(os.path.join(root, "devkit", "cars_train_annos.mat"), fields, rows)
        else:
            no_class = tuple(f for f in fields if f != "class")
            write_struct_mat(os.path.join(root, "devkit", "cars_test_annos.mat"), no_class,
                             [r[:4] + r[5:] for r in rows])
            if with_test_labels:
                write_struct_mat(os.path.join(root, "cars_test_annos_withlabels.mat"), fields, rows)
    scipy.io.savemat(os.path.join(root, "devkit", "cars_meta.mat"), {"class_names": cars_class_names()})
    for split in expected:
        expected[split].sort(key=lambda r: (r[1], r[0]))
    return expected


def make_cub(root, per_class=2):
    """ROOT/CUB_200_2011/{images/NNN.Name/*.jpg, images.txt, classes.txt, image_class_labels.txt,
    bounding_boxes.txt, train_test_split.txt}. Returns expected splits (box as x0, y0, x1, y1)."""
    base = os.path.join(root, "CUB_200_2011")
    os.makedirs(base, exist_ok=True)
    folders = {c: f"{c:03d}.Bird_Species_{c}" for c in range(1, 201)}
    images, labels, boxes, split_rows, expected = [], [], [], [], {"train": [], "test": []}
    image_id = 0
    for c in CUB_CLASSES:
        for k in range(per_class):
            image_id += 1
            rel = f"{folders[c]}/Bird_Species_{c}_{k:04d}_{1000 + image_id}.jpg"
            size = SIZES[image_id % len(SIZES)]
            path = write_jpeg(os.path.join(base, "images", rel), image_id, size)
            x, y, w, h = 3.0, 2.0, size[0] - 9.0, size[1] - 6.0
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            boxes.append(f"{image_id} {x} {y} {w} {h}")
            split_rows.append(f"{image_id} {k % 2}")
            expected["train" if c <= 100 else "test"].append((path, c - 1, (x, y, x + w, y + h)))
    files = {"images.txt": images, "image_class_labels.txt": labels, "bounding_boxes.txt": boxes,
             "train_test_split.txt": split_rows,
             "classes.txt": [f"{c} {folders[c]}" for c in range(1, 201)]}
    for name, lines in files.items():
        with open(os.path.join(base, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    return expected


SOP_SUPER = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug", "sofa",
             "stapler", "table", "toaster")
# (class_id, super_class_id, product id, images); classes 1-3 train, 4-5 test, as the real
# files split: Ebay_train holds class ids 1..11,318, Ebay_test 11,319..22,634.
SOP_CLASSES = ((1, 1, "111085122871", 2), (2, 1, "111265328556", 3), (3, 3, "121177232451", 2),
               (4, 6, "130811112307", 2), (5, 12, "131093456342", 2))


def make_sop(root):
    """ROOT/Stanford_Online_Products/{<super>_final/<product>_<k>.JPG, Ebay_train.txt,
    Ebay_test.txt, Ebay_info.txt}. Returns expected splits with extra = super label."""
    base = os.path.join(root, "Stanford_Online_Products")
    header = "image_id class_id super_class_id path"
    tables, expected = {"train": [], "test": []}, {"train": [], "test": []}
    image_id = 0
    for class_id, super_id, product, count in SOP_CLASSES:
        split = "train" if class_id <= 3 else "test"
        for k in range(count):
            image_id += 1
            rel = f"{SOP_SUPER[super_id - 1]}_final/{product}_{k}.JPG"
            path = write_jpeg(os.path.join(base, rel), image_id)
            tables[split].append(f"{len(tables[split]) + 1} {class_id} {super_id} {rel}")
            expected[split].append((path, class_id - 1, super_id - 1))
    for split, name in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        with open(os.path.join(base, name), "w") as f:
            f.write("\n".join([header] + tables[split]) + "\n")
    with open(os.path.join(base, "Ebay_info.txt"), "w") as f:
        f.write("\n".join([header] + [" ".join(["%d" % (i + 1)] + r.split()[1:])
                                      for i, r in enumerate(tables["train"] + tables["test"])]) + "\n")
    return expected


FOLDER_CLASSES = {"train": ("zebra", "ant", "Cat"), "test": ("moth", "bee")}


def make_folder(root):
    """ROOT/{train,test}/<class>/<image>; class ids by sorted folder name over both splits."""
    names = sorted(c for classes in FOLDER_CLASSES.values() for c in classes)
    expected, index = {"train": [], "test": []}, 0
    for split, classes in FOLDER_CLASSES.items():
        for name in classes:
            for k in range(2):
                index += 1
                path = write_jpeg(os.path.join(root, split, name, f"img_{k}.jpg"), index)
                expected[split].append((path, names.index(name), None))
        with open(os.path.join(root, split, classes[0], "notes.txt"), "w") as f:
            f.write("not an image: ignored\n")
        expected[split].sort(key=lambda r: (r[1], r[0]))
    return expected, names


def truncate(path):
    """Cuts a JPEG in half (decoders fail with 'image file is truncated')."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def garble(path):
    with open(path, "wb") as f:
        f.write(b"this is not an image")


def make_tfds(data_dir, name):
    """A prepared TFDS copy of ``name`` (the real features, a few images) under data_dir/name/<version>.

    Written with TFDS's own ``store_as_tfds_dataset``, as ``tfds build`` would lay it out.
    Cars196 and CUB ship classification splits (every class in train and test); the SOP copy
    mixes classes across its splits too, so the regrouping by class is exercised for all
    three. Returns {tfds split: [(pixels, label, super label or None), ...]} in stored order.
    """
    import tensorflow_datasets as tfds

    jpeg = tfds.features.Image(encoding_format="jpeg")
    if name == "cars196":
        version, labels = "2.1.0", (0, 97, 98, 195)
        features = tfds.features.FeaturesDict({
            "image": jpeg, "bbox": tfds.features.BBoxFeature(), "id": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=[f"car {c}" for c in range(1, 197)])})
    elif name == "caltech_birds2011":
        version, labels = "0.1.1", (0, 99, 100, 199)
        features = tfds.features.FeaturesDict({
            "image": jpeg, "image/filename": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=200),
            "label_name": tfds.features.Text(), "bbox": tfds.features.BBoxFeature(),
            "segmentation_mask": tfds.features.Image(shape=(None, None, 1))})
    else:
        version, labels = "1.0.0", None
        features = tfds.features.FeaturesDict({
            "class_id": tfds.features.ClassLabel(num_classes=22634),
            "super_class_id/num": tfds.features.ClassLabel(num_classes=12),
            "super_class_id": tfds.features.ClassLabel(names=list(SOP_SUPER)), "image": jpeg})
    splits, index = {"train": [], "test": []}, 0
    for split in splits:
        rows = [(0, 0), (1, 0), (11318, 5), (11319, 11)] if split == "test" else [(11317, 3), (2, 0)]
        if labels is not None:
            rows = [(label, None) for label in (labels if split == "train" else labels[::-1])]
        for label, super_label in rows:
            index += 1
            pixels = image_pixels(index, SIZES[index % len(SIZES)])
            if name == "cars196":
                example = {"image": pixels, "bbox": tfds.features.BBox(0.1, 0.1, 0.9, 0.9), "id": f"{index:05d}",
                           "label": label}
            elif name == "caltech_birds2011":
                example = {"image": pixels, "image/filename": f"{label + 1:03d}.Bird/{index}.jpg", "label": label,
                           "label_name": f"bird_{label + 1}", "bbox": tfds.features.BBox(0.1, 0.1, 0.9, 0.9),
                           "segmentation_mask": np.zeros(pixels.shape[:2] + (1,), np.uint8)}
            else:
                example = {"class_id": label, "super_class_id/num": super_label, "super_class_id": super_label,
                           "image": pixels}
            splits[split].append((pixels, label, super_label, example))
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=version, features=features, data_dir=data_dir, disable_shuffling=True,
        split_datasets={s: [(f"{s}{i}", r[3]) for i, r in enumerate(rows)] for s, rows in splits.items()})
    return {s: [r[:3] for r in rows] for s, rows in splits.items()}
