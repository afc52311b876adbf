"""The ground floor: configuration, artifact paths, files and transactions, the data contract,
metrics, the submission's shape. Nothing here imports torch or another layer of the pipeline."""
