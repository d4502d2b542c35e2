"""Answer throughput for the defect-type question: the ``model.generate`` path, the cached greedy
loop without drafts (``greedy``) and ``generate_answers`` as it runs (``drafted``: the greedy loop
verifying continuations drafted from the answers already given in the call), back to back in one
run, with a check that all three give the same answers.

    .venv/bin/python benchmarks/answer_speed.py [--model models/sft] [--n 256] [--batch 8 32 128]
        [--max-new-tokens 40] [--repeats 5] [--threads N] [--train-steps 60] [--grounding MODE]
        [--cold] [--val ../shared/data/wm811k/val_data.pkl.xz] [--workers 2]

Without ``--model`` a tiny default model (64 px) is built in a temp folder and taught the type
answer ("Center.", "Edge-Loc and Loc.", ...) for ``--train-steps`` steps, so that its answers are
short and end at eos, as a trained model's do. With ``--model`` the prompts are grounded as that
folder's model was trained (its specialist included) unless ``--grounding`` names a mode. The maps
come from the synthetic generator (seed 0), or with ``--val`` from a real val split (a seeded
sample), rendered with ``render_map`` at the model's image size. For each batch size the script reports
maps/s as the median of ``--repeats`` timed runs of each path (the runs alternate). Grounding
texts are cached by image content, so after the first run the timed runs reuse them; with
``--cold`` the cache is cleared before each timed run, so every map's text is computed, as for a
folder of new maps. With ``--workers N`` a fourth path, ``workers``, answers as ``wafersage ask
--workers N`` does: ``generate_answers`` in N processes forked for each run (the fork is timed),
with the model folder's own grounding and drafts learnt afresh.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from wafersage.annotation import grounding as grounding_module
from wafersage.annotation.grounding import Grounding, as_grounder, ground_all
from wafersage.evaluation import real_val
from wafersage.modeling.generate import generate_answers
from wafersage.modeling.greedy import AnswerDrafts
from wafersage.serving.predictor import Predictor
from wafersage.serving.workers import answer_in_workers
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import render_map
from wafersage.wafers.synthetic import SyntheticConfig, generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

QUESTION = "What type of defect pattern is visible on this wafer map?"


def real_maps(val: Path, n: int, size: int) -> list[Any]:
    """``n`` maps of a real WM-811K val split (seeded sample) rendered at ``size``."""
    table = real_val.load_maps(real_val.RealVal("wm811k-processed", val), n, 0)
    cells = zip(table["map"], table["rows"], table["cols"], strict=True)
    return [render_map(decode_map(b, r, c), size) for b, r, c in cells]


def maps(n: int, size: int, seed: int) -> tuple[list[Any], list[str]]:
    """``n`` synthetic maps rendered at ``size`` and their type answers."""
    raw = generate(SyntheticConfig.from_dict({"n_wafers": n, "seed": seed}))
    images = [render_map(decode_map(r.map, r.rows, r.cols), size) for r in raw.itertuples()]
    answers = [(" and ".join(r.true_labels) or "No defect pattern") + "." for r in raw.itertuples()]
    return images, answers


def teach(model: Any, processor: Any, size: int, steps: int, batch: int = 16) -> None:
    """A few SFT steps on the type question (loss on the answer), so answers end at eos."""
    import torch

    images, answers = maps(batch * 4, size, seed=1)
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    kw = {"padding": True, "padding_side": "right", "return_tensors": "pt"}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        s = (step * batch) % len(images)
        ims, ans = images[s : s + batch], answers[s : s + batch]
        n_prompt = processor(text=[prompt] * len(ims), images=ims, **kw)["attention_mask"].sum(1)
        enc = dict(processor(text=[f"{prompt}{a}<|im_end|>\n" for a in ans], images=ims, **kw))
        labels = enc["input_ids"].clone()
        labels[torch.arange(labels.shape[1])[None] < n_prompt[:, None]] = -100
        labels[enc["attention_mask"] == 0] = -100
        opt.zero_grad()
        model(**enc, labels=labels).loss.backward()
        opt.step()
    model.eval()


def generate_path(
    model: Any,
    processor: Any,
    images: list[Any],
    questions: list[str],
    batch_size: int,
    max_new_tokens: int,
    grounding: Grounding,
) -> list[str]:
    """The answers as ``generate_answers`` computed them with ``model.generate`` (the reference)."""
    import torch

    images, questions = ground_all(grounding, images, questions)
    tok = processor.tokenizer
    out: list[str] = []
    with torch.no_grad():
        for s in range(0, len(questions), batch_size):
            convs = [
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": str(q)}]}]
                for q in questions[s : s + batch_size]
            ]
            texts = [
                processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs
            ]
            inputs = processor(
                text=texts,
                images=list(images[s : s + batch_size]),
                padding=True,
                padding_side="left",
                return_tensors="pt",
            ).to(model.device)
            ids = model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            new = ids[:, inputs["input_ids"].shape[1] :]
            out.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
    return out


def workers_path(predictor: Predictor, workers: int, *args: Any) -> list[str]:
    """The answers as ``wafersage ask --workers N`` computes them (the predictor's own grounding;
    ``args``: :func:`generate_answers`' from ``images`` on)."""
    images, questions, batch_size, max_new_tokens, _ = args
    predictor.batch_size, predictor.max_new_tokens = batch_size, max_new_tokens
    predictor._drafts = AnswerDrafts()  # drafts learnt afresh, as in the drafted path
    return answer_in_workers(predictor, images, questions, workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: a fresh tiny model)")
    ap.add_argument("--n", type=int, default=256, help="maps to answer")
    ap.add_argument("--batch", type=int, nargs="+", default=[32], help="batch sizes")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--train-steps", type=int, default=60, help="teaching steps of a fresh tiny model")
    ap.add_argument("--grounding", default=None, help="prompt mode (default: the model folder's)")
    ap.add_argument("--cold", action="store_true", help="clear the grounding text cache before each run")
    ap.add_argument("--val", type=Path, default=None, help="a real WM-811K val pickle (default: synthetic)")
    ap.add_argument("--workers", type=int, default=0, help="also time N forked workers (0: not)")
    a = ap.parse_args()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.model is None:
        from tiny_model import build_tiny_model

        a.model = build_tiny_model(Path(tempfile.mkdtemp(prefix="answer_speed_")) / "tiny")
        pred = Predictor(a.model)
        t = time.perf_counter()
        teach(pred.model, pred.processor, pred.image_size, a.train_steps)
        print(f"taught the fresh tiny model {a.train_steps} steps in {time.perf_counter() - t:.0f} s")
    else:
        pred = Predictor(a.model)
    model, processor = pred.model, pred.processor
    grounding = as_grounder(a.grounding or pred.grounder)
    images = real_maps(a.val, a.n, pred.image_size) if a.val else maps(a.n, pred.image_size, seed=0)[0]
    questions = [QUESTION] * a.n
    runs = {
        "generate": generate_path,
        "greedy": partial(generate_answers, drafts=AnswerDrafts(length=0)),  # no drafts
        "drafted": generate_answers,  # fresh drafts each call
    }
    if a.workers:
        if a.grounding:
            raise SystemExit("--workers answers with the model folder's own grounding: drop --grounding")
        runs["workers"] = lambda _m, _p, *args: workers_path(pred, a.workers, *args)
    print(
        f"torch threads {torch.get_num_threads()}, model {a.model}, {pred.image_size} px, grounding "
        f"{grounding.mode}{' with the specialist' if grounding.advisor else ''}"
        f"{' (cold cache)' if a.cold else ''}, {a.n} {'real' if a.val else 'synthetic'} maps, "
        f"max new tokens {a.max_new_tokens}{f', {a.workers} workers' if a.workers else ''}"
    )
    extra = f" {a.workers} workers maps/s | workers / generate |" if a.workers else ""
    print(
        "| batch | generate maps/s | greedy maps/s | drafted maps/s | drafted / generate "
        f"| drafted / greedy |{extra} answers equal | runs ({'; '.join(runs)}) |"
    )
    print("|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if a.workers else "") + "---|---|")
    for bs in a.batch:
        answers = {
            k: f(model, processor, images, questions, bs, a.max_new_tokens, grounding)
            for k, f in runs.items()
        }
        rates: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(a.repeats):
            for k, f in runs.items():
                if a.cold:
                    grounding_module._TEXTS.clear()
                t = time.perf_counter()
                got = f(model, processor, images, questions, bs, a.max_new_tokens, grounding)
                rates[k].append(a.n / (time.perf_counter() - t))
                if got != answers[k]:
                    raise SystemExit(f"{k}: answers changed between runs")
        same = all(v == answers["generate"] for v in answers.values())
        med = {k: statistics.median(v) for k, v in rates.items()}
        text = "; ".join(", ".join(f"{x:.0f}" for x in rates[k]) for k in runs)
        print(
            f"| {bs} | {med['generate']:.1f} | {med['greedy']:.1f} | {med['drafted']:.1f} "
            f"| {med['drafted'] / med['generate']:.2f}x | {med['drafted'] / med['greedy']:.2f}x |"
            + (f" {med['workers']:.1f} | {med['workers'] / med['generate']:.2f}x |" if a.workers else "")
            + f" {'yes' if same else 'NO'} | {text} |"
        )
        if not same:
            diff = sum(len(set(row)) > 1 for row in zip(*answers.values(), strict=True))
            raise SystemExit(f"batch {bs}: {diff} of {a.n} answers differ")
    top = max(answers["drafted"], key=answers["drafted"].count)
    print(
        f"\nexample answers: {answers['drafted'][:4]}; most common: {top!r} "
        f"({answers['drafted'].count(top)}/{a.n})"
    )


if __name__ == "__main__":
    main()
