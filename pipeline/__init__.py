"""textcomp: a Kaggle-style text-classification competition pipeline."""

__version__ = "0.1.0"
