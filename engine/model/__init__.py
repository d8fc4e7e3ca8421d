"""Layer 2, models and data: datasets (with calibration batches), the model zoo, training, checkpoints (the one meta.json writer), output folders and uploads."""
