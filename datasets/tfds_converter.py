"""A prepared TensorFlow Datasets copy (cars196, caltech_birds2011, stanford_online_products)
-> dmltf HDF5/TFRecord with the zero-shot split by class. Never downloads.

Usage: python datasets/tfds_converter.py --name cars196 [--root TFDS_DATA_DIR] --output OUT
[options]; --help lists them. The code lives in dmltf/data/raw/tfds_source.py.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Runs from a checkout without installing: the repository root holds the dmltf package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dmltf import startup  # noqa: E402

startup.start_tensorflow()
from dmltf.data.raw.tfds_source import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
