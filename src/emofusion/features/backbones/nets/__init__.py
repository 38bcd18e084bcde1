"""Networks ported to PyTorch and the converters that load their published weights, one module each.

Cheap to import: torch is imported inside the functions that build or load a network.
"""
