"""CUB-200-2011 from its raw layout, split by class: 1-100 train, 101-200 test.

Layout (METHODS.md section 7; the CUB_200_2011.tgz download):
  ROOT/CUB_200_2011/images/<NNN.Class_Name>/<file>.jpg
  images.txt "<image_id> <path under images/>", image_class_labels.txt "<image_id> <class_id>",
  classes.txt "<class_id> <NNN.Class_Name>", bounding_boxes.txt "<image_id> <x> <y> <width>
  <height>" (read only with --crop_bbox). train_test_split.txt, the classification split, is
  ignored. ROOT may also be the CUB_200_2011 folder itself. Labels are class_id - 1.

Reference: tjddus9597/Proxy-Anchor-CVPR2020 ``code/dataset/cub.py`` (classes 0-99 train,
100-199 test over images/); the DRML / GeDML assert counts of METHODS.md section 3.5. The
labels equal the references' because the folder prefix NNN is the class id.
"""
import os

from dmltf.data.raw.common import CANONICAL, Example, LayoutError, make_parser, parse_int, read_table, \
    require, run_cli, zero_shot_split

NUM_CLASSES, NUM_TRAIN_CLASSES = 200, 100


def _ids(path, columns=2):
    """{first column as int: the remaining columns} of one of the CUB txt files."""
    table = {}
    for row in read_table(path, columns):
        table[parse_int(row[0], path)] = row[1:] if columns > 2 else row[1]
    return table


def read(root, crop_bbox=False):
    """(splits, class_names, metadata) of a CUB-200-2011 download under ``root``."""
    if not os.path.isfile(os.path.join(root, "images.txt")) and os.path.isdir(os.path.join(root, "CUB_200_2011")):
        root = os.path.join(root, "CUB_200_2011")

    def need(name):
        return require(os.path.join(root, name), f"CUB-200-2011 file {name}")

    images_dir = require(os.path.join(root, "images"), "CUB-200-2011 image folder images/", is_dir=True)
    paths, classes = _ids(need("images.txt")), _ids(need("image_class_labels.txt"))
    class_names = _ids(need("classes.txt"))
    boxes = _ids(need("bounding_boxes.txt"), 5) if crop_bbox else {}
    if sorted(class_names) != list(range(1, NUM_CLASSES + 1)):
        raise LayoutError(f"{need('classes.txt')}: expected class ids 1..{NUM_CLASSES}, got {len(class_names)} ids")
    examples = []
    for image_id, rel in paths.items():
        if image_id not in classes:
            raise LayoutError(f"{need('image_class_labels.txt')} has no class for image {image_id} ({rel})")
        class_id = parse_int(classes[image_id], need("image_class_labels.txt"))
        if class_id not in class_names:
            raise LayoutError(f"{need('image_class_labels.txt')}: image {image_id} has class {class_id}, "
                              f"expected 1..{NUM_CLASSES}")
        box = None
        if crop_bbox:
            if image_id not in boxes:
                raise LayoutError(f"{need('bounding_boxes.txt')} has no box for image {image_id} ({rel})")
            try:
                x, y, w, h = (float(v) for v in boxes[image_id])
            except ValueError:
                raise LayoutError(f"{need('bounding_boxes.txt')}: bad box for image {image_id}") from None
            box = (x, y, x + w, y + h)
        examples.append(Example(os.path.join(images_dir, rel), class_id - 1, box=box))
    metadata = {"dataset": "cub200", "source_layout": "CUB_200_2011",
                "split_rule": "zero-shot by class: classes 1-100 train, 101-200 test; label = class_id - 1"}
    names = [class_names[c] for c in range(1, NUM_CLASSES + 1)]
    return zero_shot_split(examples, NUM_TRAIN_CLASSES), names, metadata


def main(argv=None):
    parser = make_parser("Convert CUB-200-2011 to the dmltf HDF5/TFRecord format.\n\n"
                         + __doc__.split("\n\n", 1)[1])

    def build(args):
        splits, class_names, metadata = read(args.root, args.crop_bbox)
        return splits, class_names, metadata, CANONICAL["cub200"]

    return run_cli(parser, build, argv)
