"""cifutils: variational inference with continuously-indexed normalizing flows."""

__version__ = "0.1.0"
