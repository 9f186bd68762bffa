"""Raw dataset layouts -> the dmltf formats: the library half of ``datasets/*_converter.py``.

Modules:
    common.py       Example, the image policy (decode, crop, resize), the conversion loop with
                    the bad-image list, progress bar and canonical-count table, shared CLI options
    cars196.py      car_ims + cars_annos.mat, and the devkit layout (.mat struct arrays)
    cub200.py       CUB_200_2011 txt files, optional bounding-box crop
    sop.py          Ebay_train.txt / Ebay_test.txt, super-class labels kept
    folder.py       ROOT/<split>/<class>/<image>
    tfds_source.py  an already prepared TensorFlow Datasets copy (never downloads)
    dvml.py         the DVML reference HDF5 layout (Fuel split attribute)

Example:
    >>> from dmltf.data.raw import common
    >>> common.CANONICAL["cars196"]["train"]  # (classes, images) of the standard split
    (98, 8054)
"""
