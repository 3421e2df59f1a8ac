"""binlab: a lab for binarizing language models."""
__version__ = "0.1.0"
