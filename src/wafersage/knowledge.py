"""The root-cause knowledge base (``resources/knowledge_base.yaml``): pattern -> process step,
equipment category and potential causes, with the literature each entry comes from."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from wafersage.errors import WaferSageError
from wafersage.taxonomy import PATTERNS

DEFAULT_PATH = "resources/knowledge_base.yaml"


class RootCauseEntry(BaseModel):
    """What the literature attributes one defect pattern to."""

    process_step: str = Field(min_length=3)
    equipment_category: str = Field(min_length=3)
    potential_causes: list[str] = Field(min_length=1)
    sources: list[str] = Field(min_length=1)


class KnowledgeBase(BaseModel):
    """The whole file: a version, named sources and one entry a pattern."""

    version: int
    sources: dict[str, str]
    patterns: dict[str, RootCauseEntry]

    @model_validator(mode="after")
    def _sources_resolve(self) -> KnowledgeBase:
        for name, entry in self.patterns.items():
            if name not in PATTERNS:
                raise ValueError(f"unknown pattern {name!r}")
            missing = [s for s in entry.sources if s not in self.sources]
            if missing:
                raise ValueError(f"{name}: unnamed sources {missing}")
        return self


def load_knowledge_base(path: str | Path | None = None) -> KnowledgeBase:
    """The packaged knowledge base, or the file at ``path``; a bad file raises one line."""
    if path is None:
        return _packaged()
    path = Path(path)
    if not path.exists():
        raise WaferSageError(path, "knowledge base not found")
    return _parse(path.read_text(), path)


@lru_cache(maxsize=1)
def _packaged() -> KnowledgeBase:
    text = resources.files("wafersage").joinpath(DEFAULT_PATH).read_text()
    return _parse(text, DEFAULT_PATH)


def _parse(text: str, where: str | Path) -> KnowledgeBase:
    try:
        return KnowledgeBase.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise WaferSageError(where, "invalid knowledge base", str(exc).replace("\n", " ")[:300]) from None
