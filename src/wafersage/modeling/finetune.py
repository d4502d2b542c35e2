"""What the fine-tuning stages (SFT, GSPO) share: the PEFT config built from their ``lora`` params,
the run key that names a training run's checkpoint folder, resuming from the newest complete
checkpoint and the model to save at the end."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from wafersage.tracking import file_md5, flatten

log = logging.getLogger(__name__)


def lora_enabled(p: dict[str, Any], base: str) -> bool:
    """LoRA on or off: ``auto`` means on for a real base, off for the tiny default."""
    flag = p["lora"]["enabled"]
    return base != "tiny" if flag == "auto" else bool(flag)


def run_key(p: dict[str, Any], inputs: dict[str, Path]) -> str:
    """Identifies a training run: same params and inputs -> same checkpoint folder."""
    h = hashlib.md5(json.dumps(flatten(p), sort_keys=True, default=str).encode())
    for name in sorted(inputs):
        h.update(f"{name}={file_md5(inputs[name])}".encode())
    return h.hexdigest()[:12]


def peft_config_for(p: dict[str, Any]) -> Any:
    from peft import LoraConfig

    lp = p["lora"]
    return LoraConfig(
        r=int(lp["r"]),
        lora_alpha=int(lp["alpha"]),
        lora_dropout=float(lp["dropout"]),
        target_modules=list(lp["target_modules"]),
        task_type="CAUSAL_LM",
    )


def complete(folder: Path) -> bool:
    """Whether a ``checkpoint-N`` folder was saved to the end: the trainer writes
    ``trainer_state.json`` last, so it must parse and name step N."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        return int(state["global_step"]) == int(folder.name.rsplit("-", 1)[1])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def last_checkpoint(ckpt: Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder under ``ckpt`` (what a rerun resumes from);
    newer ones a kill left half-saved are removed, so the rerun saves them afresh."""
    if not ckpt.is_dir():
        return None
    found = [d for d in ckpt.iterdir() if d.is_dir() and re.fullmatch(r"checkpoint-\d+", d.name)]
    for folder in sorted(found, key=lambda d: int(d.name.rsplit("-", 1)[1]), reverse=True):
        if complete(folder):
            return str(folder)
        log.warning("removing %s: a checkpoint saved only in part", folder)
        shutil.rmtree(folder)
    return None


def final_model(trainer: Any, lora: bool, merge: bool) -> Any:
    """The trained model to save: LoRA merged into the base when asked."""
    model = trainer.model
    if lora and merge:
        model = model.merge_and_unload()
    return model
