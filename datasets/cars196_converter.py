"""Cars196 (car_ims + cars_annos.mat, or the devkit) -> dmltf HDF5/TFRecord, or the DVML reference file.

Usage: python datasets/cars196_converter.py --root RAW_DIR --output OUT [options]; --help lists
them. The code lives in dmltf/data/raw/cars196.py.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Runs from a checkout without installing: the repository root holds the dmltf package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# No TensorFlow here: it is started (quietly) only to write TFRecords, see common.run_cli.
from dmltf.data.raw.cars196 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
