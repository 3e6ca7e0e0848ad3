"""Training configuration, evaluation, training, MLflow tracking and the model registry."""
