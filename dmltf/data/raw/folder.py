"""Class-folder trees: ROOT/<split>/<class>/<image> (the DRML / GeDML and SoftTriple layout).

Class ids follow the sorted folder names over all splits (torchvision ImageFolder's order,
so the labels of a tree with disjoint train/test classes match GeDML's up to an offset); the
converter prints the id -> folder table. Files whose extension is not an image extension of
ImageFolder are ignored; an empty class folder is an error.
"""
import os

from dmltf.data.raw.common import CANONICAL, Example, LayoutError, make_parser, require, run_cli

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def read(root, split_names=("train", "test")):
    """(splits, class_names, metadata) of a class-folder tree under ``root``."""
    files = {}
    for split in split_names:
        split_dir = require(os.path.join(root, split), f"split folder {split}/", is_dir=True)
        classes = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
        if not classes:
            raise LayoutError(f"{split_dir} has no class folders (expected {split_dir}/<class>/<image>)")
        for name in classes:
            folder = os.path.join(split_dir, name)
            found = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise LayoutError(f"class folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
            files[(split, name)] = [os.path.join(folder, f) for f in found]
    class_names = sorted({name for _, name in files})
    ids = {name: i for i, name in enumerate(class_names)}
    splits = {split: [] for split in split_names}
    for (split, name), paths in sorted(files.items(), key=lambda item: ids[item[0][1]]):
        splits[split] += [Example(path, ids[name]) for path in paths]
    metadata = {"dataset": os.path.basename(os.path.normpath(root)), "source_layout": "class_folders",
                "split_rule": "one folder per split; class ids by sorted folder name"}
    return splits, class_names, metadata


def class_table(splits, class_names):
    """Text table: class id, folder name, images per split."""
    counts = {split: {} for split in splits}
    for split, examples in splits.items():
        for e in examples:
            counts[split][e.label] = counts[split].get(e.label, 0) + 1
    rows = [("id", "class") + tuple(splits)]
    rows += [(str(i), name) + tuple(str(counts[s].get(i, 0)) for s in splits) for i, name in enumerate(class_names)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def main(argv=None):
    parser = make_parser("Convert a class-folder tree to the dmltf HDF5/TFRecord format.\n\n" + __doc__)
    parser.add_argument("--splits", default="train,test", help="comma-separated split folders under --root")
    parser.add_argument("--canonical", choices=tuple(CANONICAL), help="compare the counts with this dataset's "
                                                                      "standard split")

    def build(args):
        splits, class_names, metadata = read(args.root, tuple(s for s in args.splits.split(",") if s))
        print(class_table(splits, class_names))
        return splits, class_names, metadata, CANONICAL.get(args.canonical)

    return run_cli(parser, build, argv)
