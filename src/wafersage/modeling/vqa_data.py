"""The VQA tables (``data/vqa/{train,val,test}.parquet``) as the model stages read them: checked,
and turned into TRL's conversational vision format (``messages`` + ``images``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from wafersage.annotation.grounding import IMAGE as IMAGE_ONLY
from wafersage.annotation.grounding import Grounding, as_grounder, ground_pngs
from wafersage.errors import WaferSageError, read_parquet

#: The columns the model stages need (docs/architecture.md, data contract of data/vqa/*.parquet).
WAFER, IMAGE, QUESTION, ANSWER, CATEGORY = "wafer_id", "image", "question", "answer", "category"
REQUIRED = (WAFER, IMAGE, QUESTION, ANSWER, CATEGORY)
#: Optional: the wafer's class labels (the truth type answers are scored against when present).
LABELS = "labels"


def read_split(path: str | Path) -> pd.DataFrame:
    """One VQA split; a missing file, missing column or empty table is a :class:`WaferSageError`."""
    path = Path(path)
    df = read_parquet(path, "VQA split", "run `dvc repro vqa` first")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise WaferSageError(path, "VQA split lacks columns", ", ".join(missing))
    if df.empty:
        raise WaferSageError(path, "VQA split is empty")
    for col in (QUESTION, ANSWER):
        bad = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if bad.any():
            raise WaferSageError(path, f"empty {col}", row=int(bad.to_numpy().nonzero()[0][0]))
    return df.reset_index(drop=True)


def image_bytes(value: Any) -> bytes:
    """The PNG bytes of an image cell (raw bytes, or a ``datasets`` image dict)."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if not isinstance(value, bytes | bytearray) or not value:
        raise WaferSageError(None, "VQA image cell is not PNG bytes", type(value).__name__)
    return bytes(value)


def pil_image(value: Any) -> Any:
    """An image cell as an RGB PIL image."""
    from PIL import Image

    return Image.open(io.BytesIO(image_bytes(value))).convert("RGB")


def messages(question: str, answer: str | None = None) -> list[dict[str, str]]:
    """One QA pair as chat messages (TRL puts the image in front of the first user turn)."""
    out = [{"role": "user", "content": str(question)}]
    if answer is not None:
        out.append({"role": "assistant", "content": str(answer)})
    return out


def grounded_cells(images: Any, questions: Any, grounding: Grounding) -> list[tuple[bytes, str]]:
    """(PNG bytes, user text) of each image cell and question, grounded per ``grounding``
    (``wafersage.annotation.grounding``): what the model is shown in training."""
    return ground_pngs(grounding, [image_bytes(v) for v in images], [str(q) for q in questions])


def to_dataset(df: pd.DataFrame, grounding: Grounding) -> Any:
    """A ``datasets.Dataset`` of ``messages`` + ``images`` (decoded to PIL on access), each prompt
    grounded per ``grounding`` (the model folder's mode)."""
    from datasets import Dataset, Features, Image, List, Value

    features = Features(
        {
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "images": List(Image()),
        }
    )
    grounded = grounded_cells(df[IMAGE], df[QUESTION], grounding)
    data = {
        "messages": [messages(q, a) for (_, q), a in zip(grounded, df[ANSWER], strict=True)],
        "images": [[{"bytes": png, "path": None}] for png, _ in grounded],
    }
    return Dataset.from_dict(data, features=features)


def corpus(df: pd.DataFrame, grounding: Grounding) -> list[str]:
    """The text the domain tokenizer is trained on: every question and answer (and, when the
    prompts are grounded, each wafer's attribute text)."""
    texts = [*df[QUESTION].astype(str), *df[ANSWER].astype(str)]
    if as_grounder(grounding).mode != IMAGE_ONLY:
        first = df.drop_duplicates(WAFER)
        texts += [text for _, text in grounded_cells(first[IMAGE], [""] * len(first), grounding)]
    return texts
