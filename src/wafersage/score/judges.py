"""Judges: a 0-10 score and a rationale per (question, answer, rubric, image), behind one interface.

* :class:`ReferenceJudge` (default, offline) is **not an LLM**: a deterministic claim-level rubric
  judge. It extracts the answer's claims (defect types, zones, clock positions, distributions/shapes,
  densities, process causes, yes/no verdicts, yield figures), checks each against the wafer's analytic
  attributes and rubric, and scores ``10 * (0.7 completeness + 0.3 precision)`` minus 2.5 points per
  contradiction and 1.5 per hallucinated defect type; completeness is per claim kind the reference
  answer makes, so omissions cost less than wrong claims. It is heavier than the rule score (it reads
  the attributes, tolerates adjacent zones/clock hours) but shares its vocabulary, so alignment
  against it is an upper bound of what an LLM judge would give.
* :class:`OpenAIJudge`: any OpenAI-compatible chat endpoint (URL/model from params, key from an
  environment variable that is never logged), the rubric in the prompt, a JSON ``{"score", "rationale"}``
  reply, an on-disk cache by content hash; timeouts, retries and unparsable replies are counted in
  :attr:`OpenAIJudge.stats` and give ``score = nan`` instead of an exception.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from wafersage.annotation.answer_parser import negated_at, parse_labels
from wafersage.annotation.knowledge import KnowledgeBase, load_knowledge_base
from wafersage.annotation.phrasing import DISTRIBUTION_PHRASES, ZONE_PHRASES
from wafersage.atomic import atomic_path
from wafersage.wafers.taxonomy import NONE, confusable_with


@dataclass(frozen=True)
class JudgeItem:
    """What a judge sees about one answer."""

    question: str
    answer: str
    reference: str
    rubric: Mapping[str, Any]
    labels: Sequence[str]
    attributes: Mapping[str, Any] = field(default_factory=dict)
    image: bytes | None = None


@dataclass(frozen=True)
class Verdict:
    """A 0-10 score (``nan`` when the judge could not score) and why."""

    score: float
    rationale: str


class Judge(Protocol):
    """The one interface every judge implements."""

    name: str

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]: ...


# --------------------------------------------------------------------------- reference judge
_ZONES = ("center", "inner", "middle", "edge", "whole")
_ZONE_RX = {
    z: re.compile(
        r"\b(?:" + "|".join(re.escape(p.lower().removeprefix("the ")) for p in ZONE_PHRASES[z]) + r")\b"
    )
    for z in _ZONES
}
_DIST_RX = {
    d: re.compile(r"\b(?:" + "|".join(re.escape(p.lower()) for p in ps) + r")\b")
    for d, ps in DISTRIBUTION_PHRASES.items()
}
_CLOCK_RX = re.compile(r"\b(\d{1,2}) o'clock\b")
_DENSITY_RX = re.compile(r"\b(sparse|moderate|dense)\b(?! blob)")
_YIELD_RX = re.compile(r"yield (?:is |of )?(\d{1,3})\s?%")
_POLAR_RX = re.compile(r"^\W*(yes|no|true|false|agree|disagree|correct|incorrect)\b")
_POSITIVE = {"yes", "true", "agree", "correct"}
PENALTY_CONTRADICTION = 2.5
PENALTY_HALLUCINATION = 1.5


def _mentions(rx: re.Pattern, text: str) -> bool:
    return any(not negated_at(text, m.start()) for m in rx.finditer(text))


def claims(text: str, kb: KnowledgeBase) -> dict[str, set]:
    """The claims a text makes, by kind (negated mentions dropped)."""
    t = " ".join(str(text).lower().split())
    out: dict[str, set] = {
        "types": parse_labels(t),
        "zones": {z for z, rx in _ZONE_RX.items() if _mentions(rx, t)},
        "clocks": {int(m.group(1)) for m in _CLOCK_RX.finditer(t) if not negated_at(t, m.start())},
        "distributions": {d for d, rx in _DIST_RX.items() if _mentions(rx, t)},
        "densities": {m.group(1) for m in _DENSITY_RX.finditer(t) if not negated_at(t, m.start())},
        "causes": set(),
        "polarity": set(),
        "yield": {int(m.group(1)) for m in _YIELD_RX.finditer(t)},
    }
    for part in _cause_parts(kb):
        i = t.find(part)
        if i >= 0 and not negated_at(t, i):
            out["causes"].add(part)
    m = _POLAR_RX.search(t)
    if m:
        out["polarity"].add(m.group(1) in _POSITIVE)
    return out


def _cause_parts(kb: KnowledgeBase) -> dict[str, set[str]]:
    """Each process-step part and equipment category of the knowledge base -> the patterns it serves."""
    out: dict[str, set[str]] = {}
    for name, e in kb.patterns.items():
        for part in re.split(r"\s*/\s*|\s*;\s*", e.process_step.lower()) + [e.equipment_category.lower()]:
            if part:
                out.setdefault(part, set()).add(name)
    return out


def _clock_dist(a: int, b: int) -> int:
    d = abs(a - b) % 12
    return min(d, 12 - d)


class ReferenceJudge:
    """Deterministic claim-level rubric judge (not an LLM; see the module docstring)."""

    name = "reference"

    def __init__(self, kb: KnowledgeBase | None = None) -> None:
        self.kb = kb or load_knowledge_base()

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        return [self.judge_one(it) for it in items]

    def judge_one(self, it: JudgeItem) -> Verdict:
        if not str(it.answer).strip():
            return Verdict(0.0, "empty answer")
        a, ref = claims(it.answer, self.kb), claims(it.reference, self.kb)
        truth_types = {c for c in it.labels if c != NONE} or {NONE}
        sp, mo = it.rubric.get("spatial", {}), it.rubric.get("morphology", {})
        zone = sp.get("zone")
        clocks = {int(p["clock"]) for p in it.attributes.get("patterns", []) if p.get("clock")} or set(
            sp.get("clock_position") or []
        )
        dists = {sp.get("distribution")} | {p.get("distribution") for p in it.attributes.get("patterns", [])}
        y = it.attributes.get("yield")
        good, bad, halluc, notes = 0.0, 0, 0, []
        # defect types
        for c in sorted(a["types"]):
            if c in truth_types:
                good += 1
            elif any(c in confusable_with(t) for t in truth_types):
                bad += 1
                notes.append(f"type {c} contradicts {'/'.join(sorted(truth_types))}")
            else:
                halluc += 1
                notes.append(f"hallucinated type {c}")
        for z in sorted(a["zones"]):
            if z == zone or zone in (None, "none"):
                good += 1
            elif z in _ZONES[:4] and zone in _ZONES[:4] and abs(_ZONES.index(z) - _ZONES.index(zone)) == 1:
                good += 0.5
            else:
                bad += 1
                notes.append(f"zone {z} but {zone}")
        for c in sorted(a["clocks"]):
            d = min((_clock_dist(c, t) for t in clocks), default=6)
            if d <= 1:
                good += 1 if d == 0 else 0.7
            else:
                bad += 1
                notes.append(f"{c} o'clock wrong")
        for d in sorted(a["distributions"]):
            if d in dists:
                good += 1
            else:
                bad += 1
                notes.append(f"distribution {d} wrong")
        levels = ("sparse", "moderate", "dense")
        for d in sorted(a["densities"]):
            truth = mo.get("density")
            if truth not in levels or d == truth:
                good += 1
            elif abs(levels.index(d) - levels.index(truth)) == 1:
                good += 0.3
            else:
                bad += 1
                notes.append(f"density {d} but {truth}")
        parts = _cause_parts(self.kb)
        for c in sorted(a["causes"]):
            if parts[c] & truth_types or c in ref["causes"]:
                good += 1
            else:
                bad += 1
                notes.append(f"'{c}' wrongly blamed")
        if ref["polarity"] and a["polarity"] and a["polarity"] != ref["polarity"]:
            bad += 2
            notes.append("yes/no verdict flipped")
        for v in sorted(a["yield"]):
            if y is not None and abs(v - 100 * y) > 5:
                bad += 1
                notes.append(f"yield {v}% wrong")
        # completeness: the claim kinds the reference makes, each satisfied by a matching claim
        kinds = [k for k, v in ref.items() if v]
        sat = []
        for k in kinds:  # share of the reference's claims of this kind that the answer also makes
            if k == "clocks":
                got = [min((_clock_dist(c, t) for t in a[k]), default=6) <= 1 for c in ref[k]]
                sat.append(sum(got) / len(got))
            else:
                sat.append(len(ref[k] & a[k]) / len(ref[k]))
        completeness = sum(sat) / len(sat) if sat else 0.5
        n_claims = good + bad + halluc
        precision = good / n_claims if n_claims else 0.0
        score = 10 * (0.7 * completeness + 0.3 * precision)
        score -= PENALTY_CONTRADICTION * bad + PENALTY_HALLUCINATION * halluc
        score = float(min(10.0, max(0.0, score)))
        missing = [k for k, s in zip(kinds, sat, strict=True) if s < 1]
        why = f"completeness {completeness:.2f} over {kinds}; precision {precision:.2f}"
        if missing:
            why += f"; missing {missing}"
        if notes:
            why += "; " + "; ".join(notes)
        return Verdict(round(score, 3), why)


# --------------------------------------------------------------------------- OpenAI-compatible judge
SYSTEM_PROMPT = (
    "You are a semiconductor yield engineer grading answers about wafer bin maps. Grade the answer "
    "against the rubric (must_hit phrases a correct answer states, must_avoid phrases that are wrong) and "
    "the reference answer. Penalise contradictions and invented defects more than omissions. Reply with "
    'JSON only: {"score": <integer 0-10>, "rationale": "<one or two sentences>"}.'
)
_JSON_RX = re.compile(r"\{.*\}", re.DOTALL)


def judge_prompt(it: JudgeItem) -> str:
    """The user message of the LLM judge (the rubric inlined as JSON)."""
    rubric = {k: v for k, v in it.rubric.items() if k not in ("summary", "schema_version")}
    return (
        f"Question: {it.question}\n\nReference answer: {it.reference}\n\n"
        f"Rubric: {json.dumps(rubric, sort_keys=True)}\n\nAnswer to grade: {it.answer}\n"
    )


def parse_reply(text: str) -> Verdict | None:
    """``Verdict`` from a judge reply (JSON, possibly fenced), or ``None`` when unusable."""
    m = _JSON_RX.search(text or "")
    if not m:
        return None
    try:
        body = json.loads(m.group())
        score = float(body["score"])
    except (ValueError, KeyError, TypeError):
        return None
    if not 0 <= score <= 10:
        return None
    return Verdict(score, str(body.get("rationale", ""))[:1000])


def _read_cached(path: Path) -> Verdict | None:
    """The verdict cached at ``path``; None when absent or unreadable (bad JSON or encoding, a
    missing field, a score that is not a number in 0..10, a rationale that is not text)."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        score, rationale = body["score"], body["rationale"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(score, bool) or not isinstance(score, int | float) or not isinstance(rationale, str):
        return None
    if not 0.0 <= float(score) <= 10.0:
        return None
    return Verdict(float(score), rationale)


class OpenAIJudge:
    """LLM judge at an OpenAI-compatible endpoint (see the module docstring)."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        cache_dir: str | Path,
        api_key_env: str = "WAFERSAGE_JUDGE_API_KEY",
        timeout_s: float = 60.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        send_image: bool = True,
    ) -> None:
        from openai import OpenAI

        self.model, self.retries, self.backoff_s, self.send_image = model, retries, backoff_s, send_image
        self.cache_dir = Path(cache_dir)
        self.client = OpenAI(
            base_url=base_url, api_key=os.environ.get(api_key_env) or "none", timeout=timeout_s, max_retries=0
        )
        self.stats: Counter[str] = Counter()

    def _key(self, it: JudgeItem) -> str:
        h = hashlib.sha256()
        for part in (self.model, SYSTEM_PROMPT, judge_prompt(it)):
            h.update(part.encode())
        if self.send_image and it.image:
            h.update(it.image)
        return h.hexdigest()

    def _messages(self, it: JudgeItem) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "text", "text": judge_prompt(it)}]
        if self.send_image and it.image:
            url = "data:image/png;base64," + base64.b64encode(it.image).decode()
            content.append({"type": "image_url", "image_url": {"url": url}})
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        return [self.judge_one(it) for it in items]

    def judge_one(self, it: JudgeItem) -> Verdict:
        import openai

        key = self._key(it)
        path = self.cache_dir / key[:2] / f"{key}.json"
        cached = _read_cached(path)
        if cached is not None:
            self.stats["cache_hits"] += 1
            return cached
        if path.exists():
            self.stats["cache_corrupt"] += 1  # unreadable entry: a miss, judged again and rewritten
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                time.sleep(self.backoff_s * attempt)
            self.stats["calls"] += 1
            try:
                resp = self.client.chat.completions.create(
                    model=self.model, messages=self._messages(it), temperature=0.0, max_tokens=300
                )
            except openai.APITimeoutError:
                self.stats["timeouts"] += 1
                continue
            except (openai.APIConnectionError, openai.APIStatusError) as exc:
                self.stats[f"errors.{type(exc).__name__}"] += 1
                continue
            text = resp.choices[0].message.content if resp.choices else ""
            verdict = parse_reply(text or "")
            if verdict is None:
                self.stats["unparsable"] += 1
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps({"score": verdict.score, "rationale": verdict.rationale}))
            return verdict
        self.stats["failed"] += 1
        return Verdict(float("nan"), "judge failed (see stats)")


def make_judge(params: Mapping[str, Any], cache_dir: str | Path) -> Judge:
    """The judge named by the validated ``judge`` params (``reference`` or ``openai``)."""
    if params["judge"] == "reference":
        return ReferenceJudge()
    o = params["openai"]
    return OpenAIJudge(
        base_url=o["base_url"],
        model=o["model"],
        cache_dir=cache_dir,
        api_key_env=o["api_key_env"],
        timeout_s=float(o["timeout_s"]),
        retries=int(o["retries"]),
        send_image=bool(o["send_image"]),
    )
