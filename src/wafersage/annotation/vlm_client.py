"""Descriptions from a vision-language model at any OpenAI-compatible chat endpoint (vLLM, Ollama,
a hosted API): the rendered map goes as a base64 PNG data URL, the prompt is one of the packaged
files in ``wafersage/prompts/``. Replies are cached on disk by content hash (a rerun makes no
request); timeouts, transport errors and malformed replies are retried and counted, never raised
per wafer: the caller decides what a failed wafer becomes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from wafersage.errors import WaferSageError

STRUCTURED_KEYS = ("defect_type", "zone", "clock_position", "distribution", "morphology", "root_cause")


@dataclass
class VLMConfig:
    """``describe.openai`` in params.yaml; the API key is read from the environment variable
    named by ``api_key_env`` and never logged."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "Qwen/Qwen3-VL-4B-Instruct"
    api_key_env: str = "WAFERSAGE_VLM_API_KEY"
    timeout_s: float = 60.0
    max_retries: int = 2
    temperature: float = 0.2
    max_tokens: int = 400
    cache_dir: str = ".cache/describe"
    variants: list[str] = field(default_factory=lambda: ["full", "spatial", "root_cause", "structured"])

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> VLMConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d or {}) - known)
        if unknown:
            raise WaferSageError("params.yaml", "unknown describe.openai parameter", ", ".join(unknown))
        cfg = cls(**(d or {}))
        bad = [v for v in cfg.variants if v not in ("full", "spatial", "root_cause", "structured")]
        if bad:
            raise WaferSageError("params.yaml", "unknown describe.openai variant", ", ".join(bad))
        return cfg


def prompt_template(variant: str) -> str:
    """The packaged prompt file of one variant."""
    return resources.files("wafersage").joinpath(f"prompts/{variant}.txt").read_text()


def data_url(png: bytes) -> str:
    """A PNG as a ``data:image/png;base64,...`` URL."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def parse_structured(text: str) -> dict[str, Any] | None:
    """The structured variant's JSON object (a fenced block is accepted), or None if malformed."""
    t = text.strip()
    if t.startswith("```"):
        t = t.strip("`")
        t = t[t.find("{") :] if "{" in t else t
    start, end = t.find("{"), t.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(t[start : end + 1])
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or any(k not in obj for k in STRUCTURED_KEYS):
        return None
    return obj


class VLMDescriber:
    """One client, one disk cache and the counters of one stage run."""

    def __init__(self, cfg: VLMConfig):
        from openai import OpenAI

        self.cfg = cfg
        key = os.environ.get(cfg.api_key_env) or "not-needed"
        self.client = OpenAI(base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s, max_retries=0)
        self.cache = Path(cfg.cache_dir)
        self.counts: Counter[str] = Counter()

    def _key(self, variant: str, prompt: str, png: bytes) -> str:
        h = hashlib.sha256()
        for part in (self.cfg.model, variant, prompt, str(self.cfg.temperature), str(self.cfg.max_tokens)):
            h.update(part.encode())
            h.update(b"\0")
        h.update(png)
        return h.hexdigest()

    def describe(self, png: bytes, variant: str, context: dict[str, str]) -> str | None:
        """One description, or None after ``max_retries`` failed attempts (each counted)."""
        prompt = prompt_template(variant).format(**context)
        key = self._key(variant, prompt, png)
        path = self.cache / key[:2] / f"{key}.json"
        if path.exists():
            self.counts["cache_hits"] += 1
            return json.loads(path.read_text())["text"]
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self.counts["retries"] += 1
            text = self._request(prompt, png)
            if text is None:
                continue
            if not text.strip() or (variant == "structured" and parse_structured(text) is None):
                self.counts["malformed"] += 1
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"variant": variant, "model": self.cfg.model, "text": text}))
            os.replace(tmp, path)
            return text
        self.counts["failed"] += 1
        return None

    def _request(self, prompt: str, png: bytes) -> str | None:
        import openai

        self.counts["requests"] += 1
        try:
            resp = self.client.chat.completions.create(
                model=self.cfg.model,
                temperature=self.cfg.temperature,
                max_tokens=self.cfg.max_tokens,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": data_url(png)}},
                            {"type": "text", "text": prompt},
                        ],
                    }
                ],
            )
        except openai.APITimeoutError:
            self.counts["timeouts"] += 1
            return None
        except openai.APIStatusError:
            self.counts["http_errors"] += 1
            return None
        except openai.APIConnectionError:
            self.counts["connection_errors"] += 1
            return None
        except (openai.APIResponseValidationError, ValueError, TypeError, KeyError):
            self.counts["malformed"] += 1
            return None
        try:
            text = resp.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            self.counts["malformed"] += 1
            return None
        return text
