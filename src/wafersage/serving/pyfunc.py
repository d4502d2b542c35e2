"""The MLflow pyfunc flavour of a wafersage model: the ``save_pretrained`` folder (checkpoint +
processor) is the artifact ``model``; inputs are a table of ``image`` (base64 PNG or .npy, a PNG/.npy
data URL, or a canonical map as JSON list text; read by :func:`wafersage.serving.images.model_image`,
like ``serve`` and ``ask``) and ``question``; the output is ``answer``.

Loading the pyfunc (``mlflow.pyfunc.load_model``, ``mlflow models serve``) runs the code logged with
it: for trusted registries only. ``serve`` and ``ask`` never load it this way (see
:func:`wafersage.serving.predictor.from_registry`)."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from wafersage.errors import WaferSageError
from wafersage.registry.loading import MODEL_ARTIFACT
from wafersage.serving.images import model_image

INPUT_COLUMNS = ("image", "question")


def signature() -> Any:
    """The pyfunc's signature: strings in (image, question), a string out (answer)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "image"), ColSpec("string", "question")]),
        outputs=Schema([ColSpec("string", "answer")]),
    )


class WaferVLM(mlflow.pyfunc.PythonModel):
    """Answers questions about wafer maps with the checkpoint in the ``model`` artifact."""

    def load_context(self, context: Any) -> None:
        """Load the model + processor folder once."""
        from wafersage.serving.predictor import Predictor

        config = dict(getattr(context, "model_config", None) or {})
        self.predictor = Predictor(
            context.artifacts[MODEL_ARTIFACT],
            batch_size=int(config.get("batch_size", 16)),
            max_new_tokens=int(config.get("max_new_tokens", 48)),
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """``answer`` for each row of ``model_input`` (columns ``image``, ``question``)."""
        df = pd.DataFrame(model_input)
        missing = [c for c in INPUT_COLUMNS if c not in df.columns]
        if missing:
            raise WaferSageError("model_input", "missing columns", ", ".join(missing))
        size = self.predictor.image_size
        images = [model_image(v, size, f"image row {i}") for i, v in enumerate(df["image"])]
        max_tokens = int((params or {}).get("max_new_tokens", self.predictor.max_new_tokens))
        answers = self.predictor.answer(images, [str(q) for q in df["question"]], max_tokens)
        return pd.DataFrame({"answer": answers})
