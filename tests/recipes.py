"""Shared by the recipe tests: a flagfile's flags, and the miniature SOP file (``conftest.py``'s
``mini_sop`` fixture)."""
import os

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train", "configs")


def flagfile_flags(name):
    """{flag: value text} of the ``--name=value`` lines of ``train/configs/<name>`` (or of a path)."""
    path = name if os.path.dirname(name) else os.path.join(CONFIGS, name)
    lines = [line.strip() for line in open(path) if line.strip().startswith("--")]
    return dict(line[2:].split("=", 1) for line in lines)


def convert_mini_sop(root):
    """The miniature Stanford Online Products of ``raw_datasets.make_sop`` under ``root``,
    converted with datasets/sop_converter.py's reader; returns the HDF5 path."""
    from raw_datasets import make_sop

    from dmltf.data.raw import sop

    make_sop(str(root))
    output = os.path.join(str(root), "sop.hdf5")
    assert sop.main(["--root", os.path.join(str(root), "Stanford_Online_Products"), "--output", output,
                     "--resize", "none"]) == 0
    return output
