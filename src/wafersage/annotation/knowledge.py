"""The root-cause knowledge base (``resources/knowledge_base.yaml``): pattern -> process step,
equipment category and potential causes, with the literature each entry comes from.

A class of the active taxonomy the file has no entry for gets a generic one (an unattributed
process step, no cause), named in :attr:`KnowledgeBase.generic` and logged as a warning; the
describe and rubrics stages count them (``knowledge_base.generic_classes``). Entries for classes
the taxonomy lacks are kept and unused."""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from wafersage.errors import WaferSageError
from wafersage.wafers import taxonomy

log = logging.getLogger(__name__)

DEFAULT_PATH = "resources/knowledge_base.yaml"
#: The source every generic entry names.
GENERIC_SOURCE = "generic"


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
    #: classes of the active taxonomy given the generic entry (none in the file)
    generic: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sources_resolve(self) -> KnowledgeBase:
        for name, entry in self.patterns.items():
            missing = [s for s in entry.sources if s not in self.sources]
            if missing:
                raise ValueError(f"{name}: unnamed sources {missing}")
        return self


def generic_entry(name: str) -> RootCauseEntry:
    """The stand-in entry of a class the knowledge base does not document."""
    return RootCauseEntry(
        process_step=f"unattributed process step ({name})",
        equipment_category="unattributed equipment",
        potential_causes=[f"no documented root cause for {name}; needs further analysis"],
        sources=[GENERIC_SOURCE],
    )


def completed(kb: KnowledgeBase) -> KnowledgeBase:
    """``kb`` with a generic entry for each pattern of the active taxonomy it lacks (warned)."""
    missing = [c for c in taxonomy.patterns() if c not in kb.patterns]
    if not missing:
        return kb
    log.warning("knowledge base has no entry for %s: a generic root cause stands in", ", ".join(missing))
    return kb.model_copy(
        update={
            "sources": {**kb.sources, GENERIC_SOURCE: "wafersage: class not in the knowledge base"},
            "patterns": {**kb.patterns, **{c: generic_entry(c) for c in missing}},
            "generic": [*kb.generic, *missing],
        }
    )


def load_knowledge_base(path: str | Path | None = None) -> KnowledgeBase:
    """The packaged knowledge base, or the file at ``path``, completed for the active taxonomy
    (:func:`completed`); a bad file raises one line."""
    if path is None:
        return completed(_packaged())
    path = Path(path)
    if not path.exists():
        raise WaferSageError(path, "knowledge base not found")
    return completed(_parse(path.read_text(), path))


@lru_cache(maxsize=1)
def _packaged() -> KnowledgeBase:
    text = resources.files("wafersage").joinpath(DEFAULT_PATH).read_text()
    return _parse(text, DEFAULT_PATH)


def _parse(text: str, where: str | Path) -> KnowledgeBase:
    try:
        return KnowledgeBase.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise WaferSageError(where, "invalid knowledge base", str(exc).replace("\n", " ")[:300]) from None
