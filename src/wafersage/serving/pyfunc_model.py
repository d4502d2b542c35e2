"""MLflow "models from code" entry: the file ``register`` logs as the pyfunc's code (no pickling);
MLflow runs the logged copy when loading the model, so whoever can write to the registry chooses
what runs there (``serve`` and ``ask`` do not load it)."""

from mlflow.models import set_model

from wafersage.serving.pyfunc import WaferVLM

set_model(WaferVLM())
