"""GPU check of the production GSPO path: a Qwen3-VL-4B-shaped model (random init from the published
config sizes, bf16), LoRA r=16, the gspo stage's own GRPOConfig builder and curriculum trainer, G=8
completions of 256 tokens (a random-init model never stops early). Reports seconds per GSPO step
and peak GPU memory, and rollout tokens/s of plain ``generate`` with the eager (dynamic) cache vs a
static cache, and of vLLM where it is installed. Skips cleanly (exit 0) without CUDA.

    python benchmarks/gpu_gspo_check.py [--steps 3] [--shape 4b|tiny] [--cpu-smoke]

``--shape tiny --cpu-smoke`` runs the same code on the CPU with the tiny default's shape (checks the
script where there is no GPU; its timings mean nothing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from gpu_sft_check import QWEN3_VL_4B, VOCAB_4B, _processor  # noqa: E402  (one place for the 4B shape)

RUBRIC = {
    "defect_types": {"must_hit": ["edge ring"], "must_avoid": ["center"]},
    "spatial": {"must_hit": ["edge zone"], "must_avoid": []},
    "morphology": {"must_hit": ["ring"], "must_avoid": []},
    "root_cause": {"must_hit": ["etch"], "must_avoid": []},
}


def _table(n: int, image_size: int) -> Any:
    import numpy as np
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)).save(buf, "PNG")
        rows.append(
            {
                "pair_id": f"p{i}",
                "question": "Describe the defect pattern on this wafer map.",
                "answer": "An edge ring in the edge zone, likely from etch.",
                "rubric": json.dumps(RUBRIC),
                "labels": ["Edge-Ring"],
                "difficulty": 1 + i % 3,
                "category": "type",
                "pool": "review" if i % 2 else "learning",
                "image": buf.getvalue(),
            }
        )
    return pd.DataFrame(rows)


def rollout_tokens_per_s(model: Any, processor: Any, image: Any, g: int, new: int, static: bool) -> float:
    """Sampled tokens/s of ``generate`` for ``g`` copies of one prompt, ``new`` tokens each."""
    import torch

    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the map."}]}]
    text = processor.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text] * g, images=[image] * g, return_tensors="pt", padding=True).to(
        model.device
    )
    kw = {"cache_implementation": "static"} if static else {}
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=True, **kw)  # warm-up
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=True, **kw)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    return (out.shape[1] - inputs["input_ids"].shape[1]) * g / (time.perf_counter() - t)


def vllm_tokens_per_s(model: Any, processor: Any, g: int, new: int) -> str:
    """vLLM sampled tokens/s on the same weights (saved to a temp folder), or why not."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        return "not installed"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            llm = LLM(model=tmp, dtype="bfloat16", gpu_memory_utilization=0.3, max_model_len=2048)
            sp = SamplingParams(n=g, max_tokens=new, min_tokens=new, ignore_eos=True, temperature=1.0)
            t = time.perf_counter()
            llm.generate(["Describe the map."], sp)
            return f"{g * new / (time.perf_counter() - t):.0f}"
    except Exception as exc:  # noqa: BLE001 - report, do not crash the check
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--shape", choices=("4b", "tiny"), default="4b")
    ap.add_argument("--cpu-smoke", action="store_true", help="run on CPU (correctness only)")
    ap.add_argument("--completion", type=int, default=256)
    ap.add_argument("--generations", type=int, default=8)
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("gpu_gspo_check: skipped (no CUDA device)")
        return 0

    from transformers import Qwen3VLForConditionalGeneration

    from wafersage.config import validated
    from wafersage.modeling.curriculum import Layout, Schedule, parse_stages
    from wafersage.modeling.finetune import peft_config_for
    from wafersage.modeling.gspo_trainer import CurriculumGRPOTrainer
    from wafersage.modeling.vqa_data import pil_image
    from wafersage.score.config import HARDENED, save
    from wafersage.score.reward import make_reward_funcs
    from wafersage.stages import gspo

    gpu = torch.cuda.is_available() and not args.cpu_smoke
    big = args.shape == "4b"
    image_size = 512 if big else 64
    new = args.completion if big else 16
    g = args.generations
    processor = _processor(image_size)
    processor.tokenizer.padding_side = "left"
    tok = processor.tokenizer
    config = qwen3vl_config_for(big, tok)
    torch.manual_seed(3407)
    dtype = torch.bfloat16 if gpu else torch.float32
    with torch.device("cuda" if gpu else "cpu"):
        model = Qwen3VLForConditionalGeneration(config).to(dtype)
    n_params = sum(p.numel() for p in model.parameters())
    table = _table(4 * args.steps, image_size)
    image = pil_image(table["image"][0])
    eager = rollout_tokens_per_s(model, processor, image, g, new, static=False)
    static = rollout_tokens_per_s(model, processor, image, g, new, static=True)
    vllm = vllm_tokens_per_s(model, processor, g, new) if gpu else "n/a (CPU)"

    p = validated(
        "gspo",
        {
            "num_generations": g,
            "per_device_train_batch_size": g,
            "max_completion_length": new,
            "bf16": gpu,
            "gradient_checkpointing": big,
            "beta": 0.0,
            "lora": {"enabled": True},
            "curriculum": {"stages": [{"difficulties": [1, 2, 3], "steps": args.steps}]},
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        save(HARDENED, Path(tmp) / "reward.json")
        funcs = make_reward_funcs(Path(tmp) / "reward.json")
        targs = gspo.grpo_config(p, Path(tmp) / "ck", len(funcs), args.steps)
        targs.report_to, targs.save_strategy = [], "no"
        schedule = Schedule(table, parse_stages(p["curriculum"]["stages"]), Layout(1, 1, 1), seed=0)
        trainer = CurriculumGRPOTrainer(
            model=model,
            reward_funcs=funcs,
            args=targs,
            train_dataset=gspo.to_dataset(table, "image"),
            processing_class=processor,
            peft_config=peft_config_for(p),
            schedule=schedule,
        )
        trainable = sum(t.numel() for t in trainer.model.parameters() if t.requires_grad)
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = trainer.train()
        wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
    card = torch.cuda.get_device_name(0) if gpu else "CPU (smoke run; timings not meaningful)"
    print(f"# gpu_gspo_check ({dt.date.today()}, {card})\n")
    print("| shape | params | trainable (LoRA r=16) | G x tokens | steps | s/step | peak GPU GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.shape} | {n_params / 1e9:.2f} B | {trainable / 1e6:.1f} M | {g} x {new} "
        f"| {out.global_step} | {wall / max(out.global_step, 1):.2f} | {peak:.1f} |"
    )
    print("\n| rollout | tokens/s |\n| --- | --- |")
    print(
        f"| generate, eager cache | {eager:.0f} |\n"
        f"| generate, static cache | {static:.0f} |\n| vLLM | {vllm} |"
    )
    return 0


def qwen3vl_config_for(big: bool, tok: Any) -> Any:
    """The 4B-shaped (or tiny) config with the tokenizer's special ids."""
    from wafersage.modeling.chat import token_ids
    from wafersage.modeling.tiny_config import qwen3vl_config

    config = qwen3vl_config(
        QWEN3_VL_4B if big else None, VOCAB_4B if big else len(tok), token_ids(tok), tok.pad_token_id
    )
    config.text_config.eos_token_id = tok.eos_token_id
    return config


if __name__ == "__main__":
    sys.exit(main())
