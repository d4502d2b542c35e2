"""GPU check of the production SFT path: a Qwen3-VL-4B-shaped model (random init from the published
config sizes, bf16), LoRA r=16 via the sft stage's own PEFT config and SFTConfig builder, TRL's
SFTTrainer with the torchvision-free processor, batch 2 x 2048 tokens (one 512x512 image each).
Reports SFT steps/s and peak GPU memory, on which card. Skips cleanly (exit 0) without CUDA.

    python benchmarks/gpu_sft_check.py [--steps 10] [--shape 4b|tiny] [--cpu-smoke]

``--shape tiny --cpu-smoke`` runs the same code on the CPU with the tiny default's shape (a
correctness check of the script where there is no GPU; its timings mean nothing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Qwen3-VL-4B-Instruct's published config sizes (config.json of the Hugging Face release).
QWEN3_VL_4B: dict[str, Any] = {
    "text": {
        "hidden_size": 2560,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 9728,
        "max_position_embeddings": 262144,
        "rope_theta": 5000000.0,
        "mrope_section": [24, 20, 20],
    },
    "vision": {
        "depth": 24,
        "hidden_size": 1024,
        "num_heads": 16,
        "intermediate_size": 4096,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17],
    },
}
VOCAB_4B = 151936
WORDS = (
    "wafer",
    "edge",
    "ring",
    "center",
    "donut",
    "scratch",
    "loc",
    "random",
    "defect",
    "pattern",
    "die",
    "zone",
)


def _processor(image_size: int) -> Any:
    from wafersage.modeling.chat import CHAT_TEMPLATE, train_tokenizer
    from wafersage.modeling.processor import WaferQwen3VLProcessor
    from wafersage.modeling.vision_inputs import image_processor

    tok = train_tokenizer([" ".join(WORDS)] * 50, 512)
    return WaferQwen3VLProcessor(image_processor(image_size), tok, chat_template=CHAT_TEMPLATE)


def _dataset(n: int, image_size: int, answer_words: int) -> Any:
    import numpy as np
    from PIL import Image

    from wafersage.modeling.vqa_data import to_dataset

    rng = np.random.default_rng(0)
    words = np.array(WORDS)
    rows = []
    for _ in range(n):
        img = Image.fromarray(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        rows.append(
            {
                "wafer_id": "w",
                "image": buf.getvalue(),
                "question": "Describe this wafer map in detail.",
                "answer": " ".join(rng.choice(words, answer_words)),
                "category": "type",
            }
        )
    import pandas as pd

    return to_dataset(pd.DataFrame(rows), "image")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--shape", choices=("4b", "tiny"), default="4b")
    ap.add_argument("--cpu-smoke", action="store_true", help="run on CPU (correctness only)")
    ap.add_argument("--max-length", type=int, default=2048)
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("gpu_sft_check: skipped (no CUDA device)")
        return 0

    from transformers import Qwen3VLForConditionalGeneration
    from trl import SFTTrainer

    from wafersage.config import validated
    from wafersage.modeling.chat import token_ids
    from wafersage.modeling.finetune import peft_config_for
    from wafersage.modeling.tiny_config import qwen3vl_config
    from wafersage.stages import sft

    gpu = torch.cuda.is_available() and not args.cpu_smoke
    big = args.shape == "4b"
    image_size = 512 if big else 64
    max_length = args.max_length if big else 256
    processor = _processor(image_size)
    tok = processor.tokenizer
    vocab = VOCAB_4B if big else len(tok)
    config = qwen3vl_config(QWEN3_VL_4B if big else None, vocab, token_ids(tok), tok.pad_token_id)
    config.text_config.eos_token_id = tok.eos_token_id
    torch.manual_seed(3407)
    dtype = torch.bfloat16 if gpu else torch.float32
    with torch.device("cuda" if gpu else "cpu"):
        model = Qwen3VLForConditionalGeneration(config).to(dtype)
    n_params = sum(p.numel() for p in model.parameters())
    # the answer is long enough that every sequence fills max_length (truncated there)
    data = _dataset(2 * args.steps + 2, image_size, answer_words=max_length)
    p = validated(
        "sft",
        {
            "max_steps": args.steps,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "learning_rate": 2e-4,
            "warmup_steps": 0,
            "max_length": max_length,
            "logging_steps": 1,
            "bf16": gpu,
            "gradient_checkpointing": big,
            "optim": "adamw_torch",
            "lora": {"enabled": True, "r": 16, "alpha": 16},
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        targs = sft._training_args(p, Path(tmp), has_eval=False)
        targs.report_to = []
        targs.save_strategy = "no"
        trainer = SFTTrainer(
            model=model,
            args=targs,
            train_dataset=data,
            processing_class=processor,
            peft_config=peft_config_for(p),
        )
        trainable = sum(t.numel() for t in trainer.model.parameters() if t.requires_grad)
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = trainer.train()
        wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
    card = torch.cuda.get_device_name(0) if gpu else "CPU (smoke run; timings not meaningful)"
    print(f"# gpu_sft_check ({dt.date.today()}, {card})\n")
    print(
        "| shape | params | trainable (LoRA r=16) | batch x tokens | steps | steps/s | peak GPU GiB | loss |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.shape} | {n_params / 1e9:.2f} B | {trainable / 1e6:.1f} M | 2 x {max_length} "
        f"| {out.global_step} | {out.global_step / wall:.3f} | {peak:.1f} | {out.training_loss:.3f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
