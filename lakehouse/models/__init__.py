"""Model configuration, evaluation, training, the gate, MLflow tracking and the registry."""
