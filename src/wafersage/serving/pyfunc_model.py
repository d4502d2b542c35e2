"""MLflow "models from code" entry: the file ``register`` logs as the pyfunc's code (no pickling);
MLflow runs it when loading the model."""

from mlflow.models import set_model

from wafersage.serving.pyfunc import WaferVLM

set_model(WaferVLM())
