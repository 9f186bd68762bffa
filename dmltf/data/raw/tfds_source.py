"""An already prepared TensorFlow Datasets copy -> the zero-shot split by class.

Reads ``cars196``, ``caltech_birds2011`` or ``stanford_online_products`` from
``<data_dir>/<name>/<version>/`` with ``tfds.builder_from_directory`` (a read-only builder: it
cannot download) and never calls ``download_and_prepare``. TFDS ships classification splits
for Cars196 and CUB (every class in both); this regroups the union of its splits by class:
labels 0-97 / 0-99 train, the rest test (SOP's TFDS splits are the Ebay files, already
zero-shot, and come out unchanged). Labels are TFDS's (class id - 1); SOP keeps
``super_class_id`` as the extra label ``super_labels``. Images keep TFDS's encoded bytes and go
through the same image policy as the raw converters; rows keep TFDS's order (its train split,
then test). Needs the ``tfds`` extra: ``pip install dmltf[tfds]``.

``split_rule="classification"`` (``--split_rule classification``) keeps TFDS's own train and test
splits instead (every class in both for Cars196 and CUB): the split shi510/dml-tf trained and
tested on (METHODS.md 4.1), for its ``_reference`` flagfiles only.
"""
import glob
import os

from dmltf.data.raw.common import CANONICAL, Example, LayoutError, make_parser, run_cli

# label: the class feature; train_classes: labels below it are train; canonical: CANONICAL key;
# extras: {writer keyword: feature}; id: feature naming an example; names: feature naming a class.
SPECS = {
    "cars196": dict(label="label", train_classes=98, canonical="cars196", extras={}, id="id", names=None),
    "caltech_birds2011": dict(label="label", train_classes=100, canonical="cub200", extras={},
                              id="image/filename", names="label_name"),
    "stanford_online_products": dict(label="class_id", train_classes=11318, canonical="sop",
                                     extras={"super_label": "super_class_id"}, id=None, names=None),
}


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise LayoutError("reading a TFDS copy needs tensorflow-datasets: pip install dmltf[tfds]") from None
    return tfds


def prepared_dir(name, data_dir):
    """The newest ``<data_dir>/<name>/[<config>/]<version>`` holding a dataset_info.json."""
    found = glob.glob(os.path.join(data_dir, name, "*", "dataset_info.json")) + glob.glob(
        os.path.join(data_dir, name, "*", "*", "dataset_info.json"))
    if not found:
        raise LayoutError(f"no prepared TensorFlow Datasets copy of {name} under {data_dir}: expected "
                          f"{os.path.join(data_dir, name, '<version>', 'dataset_info.json')}. dmltf never "
                          "downloads: prepare it with TFDS first, or point --root at the folder that holds it")

    def version(path):
        return tuple(int(p) if p.isdigit() else -1 for p in os.path.basename(os.path.dirname(path)).split("."))

    return os.path.dirname(max(found, key=version))


SPLIT_RULES = ("zero_shot", "classification")


class TfdsSplit:
    """The examples of one split, streamed from the prepared files (sized, re-iterable): those of
    the TFDS splits ``tfds_splits`` (None: all) whose label passes ``in_split``."""

    def __init__(self, builder, name, in_split, count, tfds_splits=None):
        self.builder, self.name, self.in_split, self.count = builder, name, in_split, count
        self.tfds_splits = tfds_splits

    def __len__(self):
        return self.count

    def __iter__(self):
        spec = SPECS[self.name]
        for tfds_split, index, example in _examples(self.builder):
            label = int(example[spec["label"]])
            if (self.tfds_splits is None or tfds_split in self.tfds_splits) and self.in_split(label):
                name = f"{self.name}/{tfds_split}[{index}]"
                if spec["id"]:
                    name += " " + example[spec["id"]].decode()
                yield Example(bytes(example["image"]), label, name=name,
                              extra_labels=tuple((k, int(example[f])) for k, f in spec["extras"].items()))


def _examples(builder, skip_images=False):
    """(tfds split, index, numpy example) over the builder's splits (train first), images undecoded."""
    tfds = _import_tfds()
    images = [k for k, f in builder.info.features.items() if isinstance(f, tfds.features.Image)]
    decoders = {k: tfds.decode.SkipDecoding() for k in images}
    for split in sorted(builder.info.splits, key=lambda s: (s != "train", s)):
        dataset = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
        if skip_images:
            dataset = dataset.map(lambda ex: {k: v for k, v in ex.items() if k not in images})
        for index, example in enumerate(tfds.as_numpy(dataset)):
            yield split, index, example


def read(name, data_dir, split_rule="zero_shot"):
    """(splits, class_names, metadata) of the prepared TFDS copy of ``name`` under ``data_dir``."""
    if name not in SPECS:
        raise LayoutError(f"unknown TFDS dataset {name!r}; supported: {', '.join(SPECS)}")
    if split_rule not in SPLIT_RULES:
        raise ValueError(f"unknown split rule {split_rule!r}; valid: {', '.join(SPLIT_RULES)}")
    tfds = _import_tfds()
    path = prepared_dir(name, data_dir)
    builder = tfds.builder_from_directory(path)
    spec = SPECS[name]
    num_train, class_names = spec["train_classes"], list(builder.info.features[spec["label"]].names)
    if split_rule == "classification" and set(builder.info.splits) != {"train", "test"}:
        raise LayoutError(f"{path}: the classification split needs TFDS splits train and test, found "
                          f"{', '.join(sorted(builder.info.splits))}")
    counts = {"train": 0, "test": 0}
    for tfds_split, _, example in _examples(builder, skip_images=True):
        label = int(example[spec["label"]])
        if split_rule == "classification":
            counts[tfds_split] += 1
        else:
            counts["train" if label < num_train else "test"] += 1
        if spec["names"]:
            class_names[label] = example[spec["names"]].decode()
    if split_rule == "classification":
        everything = lambda label: True  # noqa: E731
        splits = {s: TfdsSplit(builder, name, everything, counts[s], tfds_splits=(s,)) for s in ("train", "test")}
        rule = "classification: TFDS's own train and test splits (shi510/dml-tf's)"
    else:
        splits = {"train": TfdsSplit(builder, name, lambda label: label < num_train, counts["train"]),
                  "test": TfdsSplit(builder, name, lambda label: label >= num_train, counts["test"])}
        rule = f"zero-shot by class over all TFDS splits: labels < {num_train} train"
    metadata = {"dataset": spec["canonical"], "source_layout": f"tfds:{name}", "tfds_dir": path,
                "tfds_version": str(builder.info.version), "split_rule": rule}
    if name == "stanford_online_products":
        metadata["super_class_names"] = list(builder.info.features["super_class_id"].names)
    return splits, class_names, metadata


def main(argv=None):
    parser = make_parser("Convert a prepared TensorFlow Datasets copy to the dmltf HDF5/TFRecord format.\n\n"
                         + __doc__.split("\n\n", 1)[1],
                         root_default=os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets")))
    parser.add_argument("--name", required=True, choices=tuple(SPECS), help="TFDS dataset name")
    parser.add_argument("--split_rule", choices=SPLIT_RULES, default="zero_shot",
                        help="zero_shot (default): regroup by class; classification: TFDS's own train / test "
                             "(shi510/dml-tf's split, for its _reference flagfiles)")

    def build(args):
        if args.crop_bbox:
            raise LayoutError("--crop_bbox is not supported for TFDS copies (their boxes are normalised)")
        splits, class_names, metadata = read(args.name, args.root, args.split_rule)
        canonical = CANONICAL[SPECS[args.name]["canonical"]] if args.split_rule == "zero_shot" else None
        return splits, class_names, metadata, canonical

    return run_cli(parser, build, argv)
