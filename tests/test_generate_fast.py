"""The fast greedy decoder against ``model.generate(do_sample=False)``: the same processor batch,
the same token ids (rows stopping early at eos, rows cut at max_new_tokens, prompts of different
lengths), the same answers from ``generate_answers``, and a test that fails on wrong positions."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from wafersage.config import validated
from wafersage.modeling import greedy
from wafersage.modeling.generate import generate_answers
from wafersage.modeling.greedy import PromptEncoder, greedy_ids, is_plain_greedy
from wafersage.stages.init_model import build_tiny
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import render_map
from wafersage.wafers.synthetic import SyntheticConfig, generate

SIZE = 64
QUESTIONS = [
    "What type of defect pattern is visible on this wafer map?",
    "Type?",
    "Where on the wafer are the failing dies concentrated?",
    "Is the map a normal wafer or does it show a defect pattern at all?",
]
#: Answers of different lengths, so greedy rows end at eos on different steps.
ANSWERS = ["Center.", "Edge-Ring.", "In one zone near the edge of the wafer.", "No defect pattern."]
CORPUS = [*QUESTIONS, *ANSWERS] * 10
#: init_model params of the tiny model these tests build.
TINY_PARAMS = validated("init_model", {"vocab_size": 300, "min_frequency": 1})


def _images(n: int, seed: int = 0) -> list[Any]:
    raw = generate(SyntheticConfig.from_dict({"n_wafers": n, "seed": seed}))
    return [render_map(decode_map(r.map, r.rows, r.cols), SIZE) for r in raw.itertuples()]


def _prompt(processor: Any, question: str) -> str:
    """The chat prompt as the ``generate`` path wrote it."""
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)


def _teach(model: Any, processor: Any, images: list[Any], steps: int = 25) -> None:
    """A few full-batch steps on (image, question) -> answer, loss on the answers only."""
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(len(images))]
    ans = [ANSWERS[(i // len(QUESTIONS) + i) % len(ANSWERS)] for i in range(len(images))]
    prompts = [_prompt(processor, q) for q in qs]
    full = [p + a + "<|im_end|>\n" for p, a in zip(prompts, ans, strict=True)]
    kw = {"images": images, "padding": True, "padding_side": "right", "return_tensors": "pt"}
    prompt_len = processor(text=prompts, **kw)["attention_mask"].sum(1)
    batch = dict(processor(text=full, **kw))
    labels = batch["input_ids"].clone()
    labels[torch.arange(labels.shape[1])[None] < prompt_len[:, None]] = -100
    labels[batch["attention_mask"] == 0] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(**batch, labels=labels).loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    """A tiny Qwen3-VL taught a few steps (so its answers end at eos, at different lengths)."""
    model, processor = build_tiny(
        CORPUS, validated("init_model", {"vocab_size": 300, "min_frequency": 1}), {}, SIZE
    )
    _teach(model, processor, _images(12, seed=1))
    return model, processor


@pytest.fixture(scope="module")
def chaotic() -> tuple[Any, Any]:
    """An untrained tiny Qwen3-VL with its weight matrices scaled up: small logit margins that
    any change in the inputs or positions flips (it never emits eos, see :func:`_mid_token`)."""
    model, processor = build_tiny(
        CORPUS, validated("init_model", {"vocab_size": 300, "min_frequency": 1}), {}, SIZE
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and "embed" not in name:
                param.mul_(3.0)
    return model.eval(), processor


def _reference(
    model: Any, processor: Any, images: list[Any], qs: list[str], max_new: int, eos: int | None = None
) -> torch.Tensor:
    """New token ids from ``model.generate`` on the processor's left-padded batch."""
    tok = processor.tokenizer
    texts = [_prompt(processor, q) for q in qs]
    inputs = processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=max_new,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id if eos is None else eos,
        )
    return ids[:, inputs["input_ids"].shape[1] :]


def _fast(
    model: Any, processor: Any, images: list[Any], qs: list[str], max_new: int, eos: int | None = None
) -> torch.Tensor:
    tok = processor.tokenizer
    with torch.inference_mode():
        inputs = PromptEncoder(processor)(images, qs)
        return greedy_ids(model, inputs, max_new, tok.eos_token_id if eos is None else eos, tok.pad_token_id)


def _mid_token(ids: torch.Tensor) -> int:
    """A token that some rows emit after their first step and others never (used as eos, so rows
    stop early, on different steps)."""
    rows = [set(r[1:].tolist()) for r in ids]
    counts = {t: sum(t in r for r in rows) for t in set().union(*rows)}
    return min((c, t) for t, c in counts.items() if 0 < c < len(rows))[1]


def _batch(n: int, offset: int = 0) -> list[str]:
    return [QUESTIONS[(i * 3 + offset) % len(QUESTIONS)] for i in range(n)]


def test_encoder_gives_the_processors_batch(tiny):
    _, processor = tiny
    images = _images(6, seed=2)
    qs = _batch(6)
    texts = [_prompt(processor, q) for q in qs]
    kw = {"padding": True, "padding_side": "left", "return_tensors": "pt"}
    ref = processor(text=texts, images=images, **kw)
    enc = PromptEncoder(processor)
    assert [enc.text(q) for q in qs] == texts
    assert enc._pixels(images) is not None  # the vectorised path, not the processor
    for _ in range(2):  # the second call is served from the prompt cache
        got = enc(images, qs)
        assert set(got) == set(ref)
        for key, value in ref.items():
            assert got[key].dtype == value.dtype, key
            assert torch.equal(got[key], value), key
    # images the image processor would convert or resize go through the processor itself
    odd = [images[0].convert("P"), images[1].resize((SIZE + 16, SIZE + 16))]
    assert enc._pixels(odd) is None
    got = enc(odd, qs[:2])
    ref = processor(text=texts[:2], images=odd, **kw)
    assert all(torch.equal(got[k], v) for k, v in ref.items())


CASES = [(7, 0, 24), (5, 1, 3), (4, 2, 1), (1, 3, 12), (8, 1, 40)]


@pytest.mark.parametrize(("n", "offset", "max_new"), CASES)
def test_greedy_ids_equal_generate(tiny, n, offset, max_new):
    model, processor = tiny
    images, qs = _images(n, seed=3 + offset), _batch(n, offset)
    ref = _reference(model, processor, images, qs, max_new)
    got = _fast(model, processor, images, qs, max_new)
    assert got.shape == ref.shape
    assert torch.equal(got, ref)


@pytest.mark.parametrize(("n", "offset", "max_new"), CASES)
def test_greedy_ids_equal_generate_on_small_margins(chaotic, n, offset, max_new):
    model, processor = chaotic
    images, qs = _images(n, seed=3 + offset), _batch(n, offset)
    eos = _mid_token(_reference(model, processor, images, qs, max_new)) if n > 1 and max_new > 2 else None
    ref = _reference(model, processor, images, qs, max_new, eos)
    got = _fast(model, processor, images, qs, max_new, eos)
    assert got.shape == ref.shape
    assert torch.equal(got, ref)


def test_cases_cover_early_eos_and_the_length_cap(tiny):
    """The equality above is only worth something if rows stop at eos on different steps while
    others run to max_new_tokens."""
    model, processor = tiny
    eos = processor.tokenizer.eos_token_id
    ids = _fast(model, processor, _images(7, seed=3), _batch(7), 24)
    ended = [(row == eos).nonzero().flatten().tolist() for row in ids]
    steps = {e[0] for e in ended if e}
    assert len(steps) >= 2, ended  # eos at two or more different steps
    assert any(e and e[0] < ids.shape[1] - 1 for e in ended)
    short = _fast(model, processor, _images(5, seed=4), _batch(5, 1), 3)
    assert any(eos not in row.tolist() for row in short)  # cut by max_new_tokens


_ROPE = greedy._rope_positions


def _text_only(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
    """1-D positions in all four rows (no multimodal rope for the image tokens)."""
    mask = inputs["attention_mask"]
    return ((mask.cumsum(-1) - 1).masked_fill(mask == 0, 0))[None].expand(4, -1, -1).clone()


def _swapped_hw(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
    """The right positions with the image's height and width rows swapped."""
    return _ROPE(model, inputs)[[0, 1, 3, 2]]


@pytest.mark.parametrize("wrong", [_text_only, _swapped_hw])
def test_wrong_positions_change_the_tokens(chaotic, monkeypatch, wrong):
    """Wrong position ids give other tokens: the equality tests can see a position mistake."""
    model, processor = chaotic
    images, qs = _images(7, seed=3), _batch(7)
    ref = _reference(model, processor, images, qs, 24)
    monkeypatch.setattr(greedy, "_rope_positions", wrong)
    got = _fast(model, processor, images, qs, 24)
    assert got.shape != ref.shape or not torch.equal(got, ref)


def test_generate_answers_equal_the_generate_path(tiny):
    model, processor = tiny
    images, qs = _images(11, seed=5), _batch(11, 2)
    tok = processor.tokenizer
    want: list[str] = []
    for s in range(0, 11, 4):
        new = _reference(model, processor, images[s : s + 4], qs[s : s + 4], 16)
        want += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    assert generate_answers(model, processor, images, qs, 4, 16, "image") == want
    assert len(set(want)) > 1


def test_a_penalised_generation_config_goes_through_generate(tiny):
    model, processor = tiny
    assert is_plain_greedy(model.generation_config)
    images, qs = _images(4, seed=6), _batch(4)
    old = model.generation_config
    model.generation_config = old.__class__(**{**old.to_dict(), "repetition_penalty": 3.0})
    try:
        assert not is_plain_greedy(model.generation_config)
        want = processor.tokenizer.batch_decode(
            _reference(model, processor, images, qs, 12), skip_special_tokens=True
        )
        assert generate_answers(model, processor, images, qs, 4, 12, "image") == [t.strip() for t in want]
    finally:
        model.generation_config = old
    plain = processor.tokenizer.batch_decode(
        _fast(model, processor, images, qs, 12), skip_special_tokens=True
    )
    assert plain != want  # the penalty matters here, so the fast path would have been wrong


def test_a_lora_wrapped_model_and_training_after_answering():
    """A PEFT-wrapped model (unmerged LoRA, as SFT may hand over) decodes like ``generate``, and
    the model still trains after :func:`generate_answers` (no inference tensors left behind)."""
    from peft import LoraConfig, get_peft_model

    model, processor = build_tiny(
        CORPUS, validated("init_model", {"vocab_size": 300, "min_frequency": 1}), {}, SIZE
    )
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA starts as a no-op: give it weights that change the answers
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    model.eval()
    images, qs = _images(3, seed=7), _batch(3)
    assert torch.equal(_fast(model, processor, images, qs, 6), _reference(model, processor, images, qs, 6))
    generate_answers(model, processor, images, qs, 3, 6, "image")
    _teach(model, processor, images, steps=1)


def _primed(rows: torch.Tensor, pad: int, eos: int) -> greedy.AnswerDrafts:
    """Drafts learnt from ``rows`` of new token ids (cut after eos, pads dropped)."""
    drafts = greedy.AnswerDrafts()
    learnt = []
    for row in rows.tolist():
        learnt.append(row[: row.index(eos) + 1] if eos in row else [t for t in row if t != pad])
    drafts.add(learnt)
    return drafts


@pytest.mark.parametrize(("n", "offset", "max_new"), CASES)
@pytest.mark.parametrize("source", ["itself", "another batch", "noise"])
def test_drafted_decoding_gives_generates_tokens(tiny, chaotic, n, offset, max_new, source):
    """Drafts that are all right, partly right or all wrong change nothing in the tokens: on the
    taught model and on the small-margin one, with rows ending at eos on different steps."""
    for model, processor in (tiny, chaotic):
        tok = processor.tokenizer
        images, qs = _images(n, seed=3 + offset), _batch(n, offset)
        eos = tok.eos_token_id
        if model is chaotic[0] and n > 1 and max_new > 2:
            eos = _mid_token(_reference(model, processor, images, qs, max_new))
        ref = _reference(model, processor, images, qs, max_new, eos)
        if source == "itself":
            drafts = _primed(ref, tok.pad_token_id, eos)
        elif source == "another batch":
            other = _reference(model, processor, _images(6, seed=40), _batch(6, offset + 1), 24, eos)
            drafts = _primed(other, tok.pad_token_id, eos)
        else:
            noise = torch.randint(3, len(tok), (8, 30), generator=torch.Generator().manual_seed(n))
            drafts = _primed(torch.cat([noise, ref[:, :1].repeat(1, 30)[:8]]), tok.pad_token_id, eos)
        with torch.inference_mode():
            inputs = PromptEncoder(processor)(images, qs)
            got = greedy_ids(model, inputs, max_new, eos, tok.pad_token_id, drafts)
        assert got.shape == ref.shape
        assert torch.equal(got, ref)


def test_right_drafts_cut_the_forward_passes(tiny, monkeypatch):
    """With drafts that hold the answers, a batch decodes in two or three forwards, not one a
    token; and the answers it decodes are drafts for the next batch."""
    model, processor = tiny
    tok = processor.tokenizer
    images, qs = _images(7, seed=3), _batch(7)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    drafts = greedy.AnswerDrafts()
    with torch.inference_mode():
        inputs = PromptEncoder(processor)(images, qs)
        first = greedy_ids(model, inputs, 24, tok.eos_token_id, tok.pad_token_id, drafts)
        plain = len(calls)
        calls.clear()
        again = greedy_ids(model, inputs, 24, tok.eos_token_id, tok.pad_token_id, drafts)
    assert torch.equal(first, again)
    assert plain == first.shape[1]  # no drafts yet: the prefill and one forward a further token
    assert len(calls) <= 3 < plain


def test_drafts_follow_the_longest_known_context_and_fit_the_room():
    drafts = greedy.AnswerDrafts(order=3, length=4)
    drafts.add([[5, 6, 7, 8, 9, 2], [1, 6, 7, 3, 2]])
    assert drafts.draft([], 10) == [1, 6, 7, 3]  # the latest answer's start
    assert drafts.draft([5, 6, 7], 10) == [8, 9, 2]  # (5, 6, 7) beats the later (6, 7)
    assert drafts.draft([4, 6, 7], 10) == [3, 2]  # only (6, 7) is known: its latest continuation
    assert drafts.draft([5, 6, 7], 2) == [8, 9]
    assert drafts.draft([5, 6, 7], 0) == []
    assert drafts.draft([42], 10) == []


def test_drafts_forget_everything_when_the_table_outgrows_its_cap():
    """A long-lived server's drafts stay bounded: past ``max_keys`` the table starts afresh."""
    drafts = greedy.AnswerDrafts(order=2, length=3, max_keys=50)
    for k in range(40):
        drafts.add([[100 + k, 200 + k, 300 + k, 2]])
        assert len(drafts._next) <= 50 + 2 * 4
    assert drafts.draft([139], 5) == [239, 339, 2]  # the latest answers are still drafted
    assert drafts.draft([100], 5) == []  # the oldest are gone
