"""Converters from reference weight files to dmltf backbone weights (see README.md)."""
