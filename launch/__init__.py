"""Entry points: distributed pretraining with DeepSpeed, evaluation, MLflow logging (issues 5 and 6)."""
