"""The pretraining job's library: config, the loop, one optimizer step, checkpoints, precision, MLflow run."""
