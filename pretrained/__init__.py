"""Converters from reference weight files to dmltf backbone weights (see README.md).

Run as ``python -m pretrained.NAME``: TensorFlow starts here, without its native start-up
notices unless ``--verbose`` (``dmltf/startup.py``).
"""
from dmltf import startup

startup.start_tensorflow()
