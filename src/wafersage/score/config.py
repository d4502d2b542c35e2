"""The one config object of the rule score: every weight, threshold and cap, frozen, JSON-serialisable.

``PAPER_DEFAULT`` reproduces the WaferSAGE paper's rule score: must-hit coverage
``H = min(1, hit_slope * C)``, must-avoid ``A = max(0, 1 - avoid_step * n_f)``, per dimension
``D = hit_weight * H + (1 - hit_weight) * A``, overall ``0.4 spatial + 0.35 morphology + 0.25 root
cause``; no defect-type F1, no text metrics, no anti-gaming terms. The ``align`` stage searches the
same fields and writes the result to ``models/reward/reward_config.json`` (:func:`save` / :func:`load`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wafersage.atomic import atomic_path
from wafersage.errors import WaferSageError

#: Rubric dimensions, in the order of every per-dimension array.
DIMENSIONS: tuple[str, ...] = ("defect_types", "spatial", "morphology", "root_cause")


class ScoreConfig(BaseModel):
    """Every parameter of the rule score (see the module docstring for the formulas)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    # phrase matching
    fuzzy_threshold: float = Field(88.0, ge=50, le=100, description="rapidfuzz ratio a window needs to hit")
    min_fuzzy_chars: int = Field(5, ge=1, description="shorter phrases must match exactly")
    expand_avoid: bool = Field(
        False,
        description="also avoid the wrong values the rubric's fields imply (other classes, far zones...)",
    )
    # per dimension
    hit_slope: float = Field(1.5, ge=1.0, le=5.0, description="H = min(1, hit_slope * coverage)")
    avoid_step: float = Field(0.25, ge=0.0, le=1.0, description="A = max(0, 1 - avoid_step * n_forbidden)")
    hit_weight: float = Field(0.6, ge=0.0, le=1.0, description="D = hit_weight*H + (1-hit_weight)*A*gate")
    avoid_gate: float = Field(
        0.0, ge=0.0, le=2.0, description="A counts times H**avoid_gate: 0 = paper, >0 no credit for silence"
    )
    dim_weights: dict[str, float] = Field(
        default_factory=lambda: {"defect_types": 0.0, "spatial": 0.4, "morphology": 0.35, "root_cause": 0.25}
    )
    scope_by_reference: bool = Field(
        False, description="score only the dimensions the reference answer covers (renormalised weights)"
    )
    # other components of the overall score (weights of a convex mix; rubric weight 1 = paper)
    w_rubric: float = Field(1.0, ge=0.0)
    w_type_f1: float = Field(0.0, ge=0.0, description="set F1 of named defect types vs the labels")
    w_polarity: float = Field(0.0, ge=0.0, description="yes/no agrees with the reference (consistency Qs)")
    w_bleu: float = Field(0.0, ge=0.0)
    w_rouge: float = Field(0.0, ge=0.0)
    w_embedding: float = Field(0.0, ge=0.0, description="MiniLM cosine; 0 keeps the model unloaded")
    # anti-gaming multipliers
    length_cap: float = Field(
        0.0, ge=0.0, description="answer/reference token ratio above which it decays; 0 off"
    )
    echo_cap: float = Field(
        0.0, ge=0.0, le=1.0, description="question-token share above which it decays; 0 off"
    )
    avoid_global_step: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="score *= max(0, 1 - step * must-avoid hits in all dimensions); 0 off",
    )
    type_spam_cap: int = Field(0, ge=0, description="more wrong defect types named than this -> 0; 0 off")

    def weights(self) -> dict[str, float]:
        """The component weights of the overall mix."""
        return {
            "rubric": self.w_rubric,
            "type_f1": self.w_type_f1,
            "polarity": self.w_polarity,
            "bleu": self.w_bleu,
            "rouge": self.w_rouge,
            "embedding": self.w_embedding,
        }


PAPER_DEFAULT = ScoreConfig()

#: A hardened hand-set starting point (used before ``align`` has run, and as the first trial).
HARDENED = ScoreConfig(
    expand_avoid=True,
    avoid_gate=1.0,
    dim_weights={"defect_types": 0.3, "spatial": 0.3, "morphology": 0.2, "root_cause": 0.2},
    scope_by_reference=True,
    w_type_f1=0.3,
    w_polarity=0.3,
    w_rouge=0.1,
    length_cap=3.0,
    echo_cap=0.7,
    type_spam_cap=1,
)


def save(config: ScoreConfig, path: str | Path, extra: dict | None = None) -> None:
    """Write ``config`` (plus optional provenance under ``"_meta"``) atomically as JSON."""
    body = config.model_dump(mode="json")
    if extra:
        body["_meta"] = extra
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def load(path: str | Path) -> ScoreConfig:
    """Read a config written by :func:`save`; a bad file raises one line."""
    path = Path(path)
    if not path.exists():
        raise WaferSageError(path, "reward config not found")
    try:
        body = json.loads(path.read_text())
        body.pop("_meta", None)
        return ScoreConfig.model_validate(body)
    except (json.JSONDecodeError, ValidationError) as exc:
        raise WaferSageError(path, "invalid reward config", str(exc).replace("\n", " ")[:300]) from None
