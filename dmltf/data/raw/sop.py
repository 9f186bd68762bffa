"""Stanford Online Products from its raw layout: the Ebay_train.txt / Ebay_test.txt split.

Layout (METHODS.md sections 5.2 and 7):
  ROOT/Ebay_train.txt, ROOT/Ebay_test.txt: a header row "image_id class_id super_class_id path",
  then rows like "1 1 1 bicycle_final/111085122871_0.JPG" (1-based ids; paths under ROOT).
  Train holds classes 1-11,318 (59,551 images), test 11,319-22,634 (60,502): the split is
  already zero-shot. The Revisiting-DML layout (ROOT/Info_Files/Ebay_*.txt with the images
  under ROOT/images/) and ROOT/Stanford_Online_Products/ are found too.
Labels are class_id - 1; the super-class (super_class_id - 1, the 12 product categories) is kept
as the extra label ``super_labels`` (LM-Metric's sampler needs it), its names in the metadata.
Class names are "<category folder>/<product id>", from the paths.

Reference: PaddlePaddle/models metric_learning ``reader.py`` (METHODS.md 5.2). Deviation: Paddle
uses class_id - 1 for train and the raw class_id for test; here both are class_id - 1 (only
label equality matters for retrieval).
"""
import os

from dmltf.data.raw.common import CANONICAL, Example, LayoutError, make_parser, parse_int, read_table, \
    run_cli

HEADER = ("image_id", "class_id", "super_class_id", "path")


def _locate(root):
    """(folder of the Ebay_*.txt files, folder their paths are relative to)."""
    candidates = [(root, root), (os.path.join(root, "Stanford_Online_Products"),) * 2,
                  (os.path.join(root, "Info_Files"), os.path.join(root, "images"))]
    for info, images in candidates:
        if os.path.isfile(os.path.join(info, "Ebay_train.txt")):
            if not os.path.isdir(images):
                raise LayoutError(f"SOP image folder not found: expected {images}")
            return info, images
    raise LayoutError("SOP annotation file Ebay_train.txt not found; looked in: "
                      + ", ".join(info for info, _ in candidates))


def read(root):
    """(splits, class_names, metadata) of a Stanford Online Products download under ``root``."""
    info, images = _locate(root)
    splits, names, super_names = {}, {}, {}
    for split in ("train", "test"):
        path = os.path.join(info, f"Ebay_{split}.txt")
        if not os.path.isfile(path):
            raise LayoutError(f"SOP annotation file not found: expected {path}")
        examples = []
        for row in read_table(path, 4, header=HEADER):
            class_id, super_id = parse_int(row[1], path), parse_int(row[2], path)
            if class_id < 1 or super_id < 1:
                raise LayoutError(f"{path}: ids are 1-based, got class_id {class_id}, super_class_id {super_id}")
            folder, file = os.path.split(row[3])
            names.setdefault(class_id, f"{folder}/{file.rsplit('_', 1)[0]}")
            category = folder[: -len("_final")] if folder.endswith("_final") else folder
            if super_names.setdefault(super_id, category) != category:
                raise LayoutError(f"{path}: super_class_id {super_id} is used for both "
                                  f"{super_names[super_id]!r} and {category!r}")
            examples.append(Example(os.path.join(images, row[3]), class_id - 1,
                                    extra_labels=(("super_label", super_id - 1),)))
        splits[split] = sorted(examples, key=lambda e: (e.label, e.where))
    class_names = [names.get(c, f"unused_{c}") for c in range(1, max(names) + 1)]
    metadata = {"dataset": "sop", "source_layout": "Ebay_txt", "annotations": info,
                "split_rule": "Ebay_train.txt / Ebay_test.txt (disjoint classes); label = class_id - 1",
                "super_class_names": [super_names.get(s, f"unused_{s}") for s in range(1, max(super_names) + 1)]}
    return splits, class_names, metadata


def main(argv=None):
    parser = make_parser("Convert Stanford Online Products to the dmltf HDF5/TFRecord format.\n\n"
                         + __doc__.split("\n\n", 1)[1])

    def build(args):
        splits, class_names, metadata = read(args.root)
        return splits, class_names, metadata, CANONICAL["sop"]

    return run_cli(parser, build, argv)
