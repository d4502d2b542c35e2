"""A tiny untrained model folder in the format init_model writes (model + processor +
wafersage.json), built directly with init_model's builder (no MLflow run), for serving tests."""

from __future__ import annotations

import json
from pathlib import Path

SIZE = 64
CORPUS = [
    "What type of defect pattern is visible on this wafer map?",
    "Center. Donut. Edge-Loc. Edge-Ring. Loc. Near-full. Random. Scratch. No defect pattern.",
    "Where on the wafer are the failing dies concentrated? In one zone. Across the wafer.",
] * 20


def build_tiny_model(folder: Path, size: int = SIZE, stage: str = "base", seed: int = 3407) -> Path:
    """Write an untrained tiny Qwen3-VL model folder (same ``seed``: same weights)."""
    from wafersage.config import validated
    from wafersage.modeling.model_folder import BASE_INFO
    from wafersage.stages.init_model import build_tiny

    p = validated("init_model", {"vocab_size": 300, "min_frequency": 1, "seed": seed})
    model, processor = build_tiny(CORPUS, p, {}, size)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    info = {"base": "tiny", "image_size": size, "dtype": "float32", "stage": stage}
    (folder / BASE_INFO).write_text(json.dumps(info))
    return folder
