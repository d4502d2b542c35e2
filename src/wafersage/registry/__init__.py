"""The MLflow model registry: loading registered versions, promotion, and the model card."""
