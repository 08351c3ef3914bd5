"""The gate's version (one place; the verdict and ``gate --version`` report it)."""

__version__ = "0.1.0"
