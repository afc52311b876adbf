"""Cross-validation: the fold split, the rows each fold may see, one fold through its family,
a run's folds put together and published, and blending the runs' out-of-fold predictions."""
