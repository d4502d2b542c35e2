"""The typed params.yaml: one pydantic model a section, where its defaults live.

:func:`validated` checks a section (unknown keys, types, ranges, cross-key rules) and returns it
as a plain dict with every default filled in; a bad value is one :class:`WaferSageError` line
naming the dotted key. The library dataclasses that code also builds directly
(:class:`SyntheticConfig`, :class:`CleanConfig`, :class:`VLMConfig`, :class:`Limits`,
:class:`DieTableOptions`) keep their defaults and their own checks; the models here read the
defaults from them. ``params.schema.json`` is :func:`schema_json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from wafersage.annotation.descriptions import VARIANTS
from wafersage.annotation.grounding import MODES
from wafersage.annotation.vlm_client import VLMConfig
from wafersage.annotation.vqa import COMPOSED_SHARE
from wafersage.errors import WaferSageError
from wafersage.evaluation.real_val import REAL_SOURCES
from wafersage.labels.cleaning import CleanConfig
from wafersage.wafers.loaders import SOURCES, DieTableOptions, Limits
from wafersage.wafers.render import DEFAULT_SIZE
from wafersage.wafers.synthetic import SyntheticConfig
from wafersage.wafers.taxonomy import WM811K_CLASSES, WM811K_SYNONYMS, check_classes, check_synonyms

#: The metrics promotion may gate on (``promote.metric``).
GateMetric = Literal["rule_score", "judge_score", "type_macro_f1", "type_accuracy"]
GATE_METRICS: tuple[str, ...] = get_args(GateMetric)
#: ``lora.enabled``: ``auto`` is on for a real base, off for the tiny default.
LoraSwitch = Literal["auto"] | StrictBool
Split = Literal["train", "rl"]

_SYNTHETIC, _CLEAN, _VLM = SyntheticConfig(), CleanConfig(), VLMConfig()
_LIMITS, _DIE_TABLE = Limits(), DieTableOptions()


class Section(BaseModel):
    """A mapping of params.yaml: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


# taxonomy --------------------------------------------------------------------------------------


class TaxonomyParams(Section):
    """``taxonomy``: the defect classes every stage uses (:class:`wafersage.wafers.taxonomy.Taxonomy`)."""

    #: ordered; ``none`` first; the order of every class index (and of the model's outputs)
    classes: list[str] = Field(default_factory=lambda: list(WM811K_CLASSES), min_length=2)
    #: class -> other spellings a source or an engineer uses (any case; the class name itself is implied)
    synonyms: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in WM811K_SYNONYMS.items()}
    )

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        check_classes(v)
        return v

    @field_validator("synonyms")
    @classmethod
    def _synonyms(cls, v: dict[str, list[str]], info: Any) -> dict[str, list[str]]:
        if "classes" in info.data:  # a bad class list is reported on its own
            check_synonyms(tuple(info.data["classes"]), v)
        return v


# ingest ----------------------------------------------------------------------------------------


class SyntheticParams(Section):
    """``ingest.synthetic``: the generator (:class:`wafersage.wafers.synthetic.SyntheticConfig`)."""

    n_wafers: int = _SYNTHETIC.n_wafers
    seed: int = _SYNTHETIC.seed
    class_mix: dict[str, float] | str = Field(default_factory=lambda: dict(_SYNTHETIC.class_mix))
    mixed_fraction: float = _SYNTHETIC.mixed_fraction
    noise_rate: float = _SYNTHETIC.noise_rate
    size_min: int = _SYNTHETIC.size_min
    size_max: int = _SYNTHETIC.size_max
    size_median: float = _SYNTHETIC.size_median
    size_sigma: float = _SYNTHETIC.size_sigma
    aspect_sigma: float = _SYNTHETIC.aspect_sigma
    yield_range: tuple[float, float] = _SYNTHETIC.yield_range
    edge_fail_range: tuple[float, float] = _SYNTHETIC.edge_fail_range
    center_fail_range: tuple[float, float] = _SYNTHETIC.center_fail_range
    edge_exclusion: float = _SYNTHETIC.edge_exclusion


class DieTableParams(Section):
    """``ingest.die_table``: how source ``die-table`` reads one row a die."""

    pass_bins: list[int] = Field(default_factory=lambda: list(_DIE_TABLE.pass_bins), min_length=1)
    label_column: str | None = _DIE_TABLE.label_column
    labels_file: str | None = None


class IngestParams(Section):
    """``ingest``: the source of the raw table."""

    source: Literal[SOURCES] = "synthetic"
    path: str | list[str] | None = None
    max_die_side: int = _LIMITS.max_die_side
    max_decompressed_bytes: int = Field(_LIMITS.max_decompressed_bytes, gt=0)
    die_table: DieTableParams = Field(default_factory=DieTableParams)
    synthetic: SyntheticParams = Field(default_factory=SyntheticParams)


class ValidateRawParams(Section):
    """``validate_raw``: the Great Expectations suite of the raw gate."""

    suite: str = "expectations/raw.json"


class SplitParams(Section):
    """``split``: every wafer to train/val/test once (by lot where lots exist, else by wafer),
    gated by ``suite``."""

    train: float = Field(0.7, ge=0)
    rl: float = Field(0.1, ge=0)
    val: float = Field(0.1, ge=0)
    test: float = Field(0.1, ge=0)
    seed: int = 0
    suite: str = "expectations/split.json"

    @model_validator(mode="after")
    def _positive(self) -> SplitParams:
        if self.train <= 0:
            raise ValueError("train must be more than 0")
        return self


class ValidateVqaParams(Section):
    """``validate_vqa``: the Great Expectations suite of the VQA gate."""

    suite: str = "expectations/vqa.json"


class RenderParams(Section):
    """``render``: the image side the VLM sees (a multiple of 32: patch 16 merged 2x2)."""

    size: int = Field(DEFAULT_SIZE, gt=0, multiple_of=32)


# vision encoder, cleaning, descriptions --------------------------------------------------------


class PretrainVisionParams(Section):
    """``pretrain_vision``: the wafer vision encoder's training and scoring."""

    seed: int = 0
    threads: int = 1
    batch_size: int = Field(64, ge=1)
    max_steps: int = Field(300, ge=1)
    max_train_s: float = Field(600, gt=0)
    lr: float = 0.002
    weight_decay: float = 0.05
    warmup_steps: int = Field(15, ge=0)
    gce_q: float = 0.7
    supervised_weight: float = Field(1.0, ge=0)
    ssl_weight: float = Field(0.5, ge=0)
    ssl_temperature: float = 0.2
    speckle: float = Field(0.01, ge=0, le=1)
    balance_power: float = Field(0.0, ge=0)
    knn_k: int = Field(10, ge=1)
    embed_batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _some_loss(self) -> PretrainVisionParams:
        if self.supervised_weight + self.ssl_weight <= 0:
            raise ValueError("supervised_weight and ssl_weight must not both be 0")
        return self


class CleanWeights(Section):
    """``clean.weights``: the noise score's weight of each score (an unset one is 0)."""

    classifier: float = Field(0.0, ge=0)
    knn: float = Field(0.0, ge=0)
    cluster: float = Field(0.0, ge=0)
    density: float = Field(0.0, ge=0)


class CleanParams(Section):
    """``clean``: label cleaning (:class:`wafersage.labels.cleaning.CleanConfig`), its gate and reports."""

    seed: int = _CLEAN.seed
    embedding: Literal["none", "vision"] = "none"
    threads: int = _CLEAN.threads
    folds: int = _CLEAN.folds
    min_class_size: int = _CLEAN.min_class_size
    combo_min_count: int = _CLEAN.combo_min_count
    kmeans_per_label: int = _CLEAN.kmeans_per_label
    knn_k: int = _CLEAN.knn_k
    knn_reference: int = _CLEAN.knn_reference
    lof_neighbors: int = _CLEAN.lof_neighbors
    density_max_fit: int = _CLEAN.density_max_fit
    classifier_trees: int = _CLEAN.classifier_trees
    classifier_max_train: int = _CLEAN.classifier_max_train
    refit: bool = _CLEAN.refit
    weights: CleanWeights = Field(default_factory=lambda: CleanWeights(**_CLEAN.weights))
    flag_threshold: float = _CLEAN.flag_threshold
    relabel_confidence: float = _CLEAN.relabel_confidence
    typical_quantile: float = _CLEAN.typical_quantile
    #: GX gate: kept wafers per class (an int for every class, or a ``{class: n}`` map).
    min_kept_per_class: int | dict[str, int] = 5
    review_count: int = Field(48, ge=0)
    plot_points: int = Field(2000, ge=1)
    suite: str = "expectations/clean.json"
    class_suite: str = "expectations/clean_classes.json"


class DescribeOpenAIParams(Section):
    """``describe.openai``: an OpenAI-compatible VLM endpoint
    (:class:`wafersage.annotation.vlm_client.VLMConfig`)."""

    base_url: str = _VLM.base_url
    model: str = _VLM.model
    api_key_env: str = _VLM.api_key_env
    timeout_s: float = _VLM.timeout_s
    max_retries: int = Field(_VLM.max_retries, ge=0)
    temperature: float = _VLM.temperature
    max_tokens: int = Field(_VLM.max_tokens, ge=1)
    cache_dir: str = _VLM.cache_dir
    variants: list[Literal[VARIANTS]] = Field(default_factory=lambda: list(_VLM.variants))


class DescribeParams(Section):
    """``describe``: attributes and descriptions of every wafer."""

    backend: Literal["analytic", "openai"] = "analytic"
    labels_from: Literal["clean", "raw"] = "clean"
    flagged: Literal["exclude", "keep"] = "exclude"
    knowledge_base: str | None = None
    seed: int = 0
    openai: DescribeOpenAIParams = Field(default_factory=DescribeOpenAIParams)


class RubricsParams(Section):
    """``rubrics``: the knowledge base and which description becomes the rubric summary."""

    knowledge_base: str | None = None
    summary_variant: Literal[VARIANTS] = "full"


class VqaParams(Section):
    """``vqa``: QA synthesis (the split comes from the ``split`` stage)."""

    seed: int = 0
    composed_share: float = Field(COMPOSED_SHARE, ge=0, le=1)


# judge and reward ------------------------------------------------------------------------------


class JudgeOpenAIParams(Section):
    """``judge.openai``: an OpenAI-compatible chat endpoint (key from ``api_key_env``)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    api_key_env: str = "WAFERSAGE_JUDGE_API_KEY"
    timeout_s: float = Field(60, gt=0)
    retries: int = Field(2, ge=0)
    send_image: bool = True


class JudgeParams(Section):
    """``judge``: the calibration pool and the judge that grades it."""

    judge: Literal["reference", "openai"] = "reference"
    n_pairs: int = Field(150, ge=1)
    seed: int = 0
    cache_dir: str = ".cache/judge"
    knowledge_base: str | None = None
    openai: JudgeOpenAIParams = Field(default_factory=JudgeOpenAIParams)


class AlignParams(Section):
    """``align``: the rule score fitted to the judge (Optuna TPE)."""

    seed: int = 0
    n_trials: int = Field(60, ge=1)
    n_startup_trials: int = Field(10, ge=0)
    heldout_fraction: float = Field(0.5, gt=0, lt=1)
    external: str | None = None
    fit_on: Literal["reference", "external"] = "reference"
    n_boot: int = Field(1000, ge=1)
    group_size: int = Field(8, ge=1)
    dead_groups: int = Field(400, ge=1)
    throughput_batch: int = Field(1024, ge=1)

    @model_validator(mode="after")
    def _external_file(self) -> AlignParams:
        if self.fit_on == "external" and not self.external:
            raise ValueError("fit_on: external needs align.external (a graded file)")
        return self


# models ----------------------------------------------------------------------------------------


class SpecialistParams(Section):
    """``specialist``: the defect-type CNN + trees, blended or stacked."""

    seed: int = 0
    threads: int = 1
    width: int = Field(16, ge=1)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = 3.0e-3
    weight_decay: float = 1.0e-4
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    tta: bool = False
    trees: bool = True
    folds: int = 2
    fold_epochs: int | None = Field(None, ge=1)
    picture_features: bool = True
    combine: Literal["blend", "stack"] = "blend"
    stack_temperature: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _folds(self) -> SpecialistParams:
        if self.folds == 1 or self.folds < 0:
            raise ValueError(f"folds must be 0 (off) or at least 2, got {self.folds}")
        if self.combine == "stack" and not (self.trees and self.folds):
            raise ValueError("combine: stack needs trees: true and folds >= 2 (it learns out of fold)")
        return self


class TinyVision(Section):
    """``model.tiny.vision``: the tiny VLM's vision tower."""

    depth: int = Field(4, ge=1)
    hidden_size: int = Field(96, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(192, ge=1)
    patch_size: int = Field(16, ge=1)
    spatial_merge_size: int = Field(2, ge=1)
    temporal_patch_size: int = Field(2, ge=1)
    num_position_embeddings: int = Field(144, ge=1)
    deepstack_visual_indexes: list[int] = Field(default_factory=lambda: [1, 2])


class TinyText(Section):
    """``model.tiny.text``: the tiny VLM's language model."""

    num_hidden_layers: int = Field(4, ge=1)
    hidden_size: int = Field(128, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    head_dim: int = Field(32, ge=1)
    intermediate_size: int = Field(384, ge=1)
    max_position_embeddings: int = Field(2048, ge=1)
    rope_theta: float = 10000.0
    mrope_section: list[int] = Field(default_factory=lambda: [6, 5, 5])


class TinyParams(Section):
    """``model.tiny``: the embedded default VLM's sizes."""

    vision: TinyVision = Field(default_factory=TinyVision)
    text: TinyText = Field(default_factory=TinyText)

    @model_validator(mode="after")
    def _shapes(self) -> TinyParams:
        v, t = self.vision, self.text
        if v.hidden_size % v.num_heads:
            raise ValueError("vision.hidden_size must divide by num_heads")
        if any(not 0 <= i < v.depth for i in v.deepstack_visual_indexes):
            raise ValueError("vision.deepstack_visual_indexes must be < depth")
        if len(v.deepstack_visual_indexes) > t.num_hidden_layers:
            raise ValueError("more vision.deepstack_visual_indexes than text layers")
        if t.hidden_size != t.num_attention_heads * t.head_dim:
            raise ValueError("text.hidden_size must be num_attention_heads * head_dim")
        if sum(t.mrope_section) * 2 != t.head_dim:
            raise ValueError(f"text.mrope_section must sum to head_dim/2, got {t.mrope_section}")
        return self


class ModelParams(Section):
    """``model``: the base VLM (``tiny`` or a local Qwen3-VL checkpoint)."""

    base: str = "tiny"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    tiny: TinyParams = Field(default_factory=TinyParams)


class InitModelParams(Section):
    """``init_model``: tokenizer, vision init, grounding and the shipped specialist."""

    seed: int = 3407
    vocab_size: int = Field(1024, ge=1)
    min_frequency: int = Field(2, ge=1)
    #: A pretrained encoder folder, or off (YAML ``off`` reads as false).
    vision_init: str | Literal[False] | None = "models/vision"
    grounding: Literal[MODES] = "image+attributes"
    specialist: StrictBool = True


class LoraParams(Section):
    """``sft.lora`` / ``gspo.lora``: LoRA via PEFT (rank 16, alpha 16 on every projection)."""

    enabled: LoraSwitch = "auto"
    r: int = Field(16, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    merge: bool = True


class SftParams(Section):
    """``sft``: supervised fine-tuning with TRL's ``SFTTrainer``."""

    seed: int = 3407
    threads: int = Field(1, ge=0)
    max_steps: int = Field(1200, ge=1)
    type_oversample: int = 4
    type_balance: float = Field(0.5, ge=0, le=1)
    per_device_train_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = 2.0e-3
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = 0.0
    optim: str = "adamw_torch"
    max_length: int = Field(256, ge=1)
    logging_steps: int = Field(10, ge=1)
    eval_steps: int = Field(100, ge=1)
    eval_max_samples: int = Field(256, ge=0)
    per_device_eval_batch_size: int = Field(32, ge=1)
    early_stopping_patience: int = Field(3, ge=0)
    save_total_limit: int = Field(2, ge=1)
    gradient_checkpointing: bool = False
    bf16: bool = False
    type_eval_max: int = Field(400, ge=0)
    rule_eval_max: int = Field(200, ge=0)
    generation_batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    sample_generations: int = Field(16, ge=0)
    lora: LoraParams = Field(default_factory=LoraParams)


class CurriculumStage(Section):
    """One ``gspo.curriculum.stages`` entry."""

    name: str | None = None
    difficulties: list[Literal[1, 2, 3]] = Field(min_length=1)
    steps: int = Field(ge=1)
    review_fraction: float = Field(0.5, ge=0, le=1)
    type_fraction: float | None = Field(None, ge=0, le=1)  # share of each pool's draw that is type questions


def _default_stages() -> list[CurriculumStage]:
    spans = {"easy": [1], "medium": [1, 2], "hard": [2, 3]}
    return [CurriculumStage(name=n, difficulties=d, steps=10, review_fraction=0.5) for n, d in spans.items()]


class CurriculumParams(Section):
    """``gspo.curriculum``: easy -> hard stages over a review and a learning split."""

    enabled: bool = True
    review_split: Split = "train"
    learning_split: Split = "rl"
    stages: list[CurriculumStage] = Field(default_factory=_default_stages, min_length=1)

    @model_validator(mode="after")
    def _splits_differ(self) -> CurriculumParams:
        if self.review_split == self.learning_split:
            raise ValueError(
                "review_split and learning_split must differ (train and rl; val and test are never learned)"
            )
        return self


class GspoParams(Section):
    """``gspo``: curriculum GSPO with TRL's ``GRPOTrainer`` on the aligned reward."""

    seed: int = 3407
    threads: int = Field(1, ge=0)
    importance_sampling_level: Literal["sequence", "token"] = "sequence"
    loss_type: str = "grpo"
    epsilon: float = 3.0e-4
    epsilon_high: float = 4.0e-4
    beta: float = Field(0.02, ge=0)
    num_generations: int = Field(8, ge=2)
    per_device_train_batch_size: int = Field(32, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    steps_per_generation: int = Field(1, ge=1)
    num_iterations: int = Field(1, ge=1)
    temperature: float = Field(1.3, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_completion_length: int = Field(48, ge=1)
    learning_rate: float = 5.0e-5
    lr_scheduler_type: str = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    scale_rewards: str = "group"
    multi_objective_aggregation: str = "sum_then_normalize"
    mask_truncated_completions: bool = False
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(10, ge=1)
    save_total_limit: int = Field(2, ge=1)
    table_every: int = Field(10, ge=1)
    type_reward_weight: float = Field(1.0, ge=0)
    val_every: int = Field(10, ge=0)
    val_samples: int = Field(32, ge=1)
    bf16: bool = False
    gradient_checkpointing: bool = False
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_base_url: str | None = None
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    lora: LoraParams = Field(default_factory=LoraParams)
    curriculum: CurriculumParams = Field(default_factory=CurriculumParams)

    @model_validator(mode="after")
    def _whole_groups(self) -> GspoParams:
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError("per_device_train_batch_size must divide by num_generations")
        return self


# evaluation, registry, serving -----------------------------------------------------------------


class RealValFile(Section):
    """``evaluate.real_val`` as ``{source, path}``: a real labelled val file."""

    source: Literal[REAL_SOURCES]
    path: str


class EvaluateParams(Section):
    """``evaluate``: every model on the same test pairs, the pools, the real val check."""

    seed: int = 0
    threads: int = Field(1, ge=0)
    workers: int = Field(2, ge=1)
    max_pairs: int = Field(1000, ge=1)
    generation_batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(40, ge=1)
    n_boot: int = Field(1000, ge=10)
    confidence: float = Field(0.95, gt=0, lt=1)
    gallery: int = Field(24, ge=0)
    pool_pairs: int = Field(150, ge=0)
    select_pairs: int = Field(400, ge=1)
    #: ``auto`` (beside a real ingest source's first path), ``off`` (YAML reads it as false) or a file.
    real_val: Literal["auto", "off", False] | RealValFile = "auto"
    real_val_max: int | None = Field(None, ge=1)
    real_val_models: list[str] = Field(default_factory=lambda: ["sft", "gspo"])
    unseen_pairs: int = Field(200, ge=0)


class RegisterParams(Section):
    """``register``: the MLflow registered model."""

    model_name: str = "wafersage-vlm"
    example_seed: int = 0
    max_new_tokens: int = Field(48, ge=1)
    batch_size: int = Field(16, ge=1)

    @field_validator("model_name")
    @classmethod
    def _named(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must not be empty")
        return name


class PromoteParams(Section):
    """``promote``: challenger -> champion only when it clearly wins on ``metric``."""

    metric: GateMetric = "type_macro_f1"
    margin: float = 0.0
    n_boot: int = Field(2000, ge=10)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    #: No champion yet: null promotes unconditionally, a number is the floor.
    first_floor: float | None = None


class ServeLimits(Section):
    """Request limits and queueing of ``wafersage serve``."""

    model_config = ConfigDict(frozen=True)

    max_body_bytes: int = Field(2_000_000, ge=1)
    max_image_side: int = Field(1024, ge=1)
    max_question_chars: int = Field(2000, ge=1)
    max_tokens: int = Field(64, ge=1)
    max_pending: int = Field(64, ge=1)
    max_batch: int = Field(8, ge=1)
    batch_wait_ms: float = Field(5.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    max_json_depth: int = Field(64, ge=1)
    read_timeout_s: float = Field(30.0, gt=0)
    header_timeout_s: float = Field(10.0, gt=0)
    keep_alive_s: float = Field(5.0, gt=0)
    max_header_bytes: int = Field(16_384, ge=1)
    max_connections: int = Field(256, ge=1)


class ServeParams(ServeLimits):
    """``serve``: the OpenAI-compatible endpoint's address, auth and limits."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key_env: str = "WAFERSAGE_SERVE_API_KEY"
    docs: bool = False
    generation_batch_size: int = Field(8, ge=1)


# the file --------------------------------------------------------------------------------------


class ParamsFile(Section):
    """params.yaml: one section a stage (each stage reads only its own, see dvc.yaml)."""

    model_config = ConfigDict(title="params.yaml")

    #: the preset of ``profiles`` merged over the sections it names (:func:`wafersage.params.with_profile`)
    profile: str | None = None
    profiles: dict[str, dict[str, dict[str, Any]] | None] = Field(default_factory=dict)
    taxonomy: TaxonomyParams = Field(default_factory=TaxonomyParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    validate_raw: ValidateRawParams = Field(default_factory=ValidateRawParams)
    split: SplitParams = Field(default_factory=SplitParams)
    render: RenderParams = Field(default_factory=RenderParams)
    pretrain_vision: PretrainVisionParams = Field(default_factory=PretrainVisionParams)
    clean: CleanParams = Field(default_factory=CleanParams)
    describe: DescribeParams = Field(default_factory=DescribeParams)
    rubrics: RubricsParams = Field(default_factory=RubricsParams)
    vqa: VqaParams = Field(default_factory=VqaParams)
    validate_vqa: ValidateVqaParams = Field(default_factory=ValidateVqaParams)
    judge: JudgeParams = Field(default_factory=JudgeParams)
    align: AlignParams = Field(default_factory=AlignParams)
    specialist: SpecialistParams = Field(default_factory=SpecialistParams)
    model: ModelParams = Field(default_factory=ModelParams)
    init_model: InitModelParams = Field(default_factory=InitModelParams)
    sft: SftParams = Field(default_factory=SftParams)
    gspo: GspoParams = Field(default_factory=GspoParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    register_: RegisterParams = Field(default_factory=RegisterParams, alias="register")  # BaseModel.register
    promote: PromoteParams = Field(default_factory=PromoteParams)
    serve: ServeParams = Field(default_factory=ServeParams)


#: Top-level keys of params.yaml that are no stage's section.
PROFILE_KEYS = ("profile", "profiles")
#: ``{section name: its model}``, in params.yaml's order.
SECTIONS: dict[str, type[Section]] = {
    field.alias or name: field.default_factory
    for name, field in ParamsFile.model_fields.items()
    if name not in PROFILE_KEYS
}


def _dotted(loc: tuple[int | str, ...], data: Any, kind: str) -> str:
    """The keys of ``loc`` that name a key or an index of ``data`` (pydantic adds a tag per
    member of a union, which is no key), dot-joined."""
    parts: list[str] = []
    for i, key in enumerate(loc):
        if isinstance(data, Mapping) and key in data:
            parts.append(str(key))
            data = data[key]
        elif isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
            parts[-1:] = [f"{parts[-1]}[{key}]"] if parts else [f"[{key}]"]
            data = data[key]
        elif kind == "missing" and i == len(loc) - 1:
            parts.append(str(key))
    return ".".join(parts)


SHOULD = "input should be "


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "missing key"
    if err["type"] == "value_error":
        return str(err["ctx"]["error"])
    return err["msg"][:1].lower() + err["msg"][1:]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def problems(exc: ValidationError, data: Any, where: str) -> str:
    """A pydantic error as one line: ``<where>.<dotted key>: <what> (got <value>)`` per key,
    ``;``-joined (the members of a union ``or``-joined)."""
    by_key: dict[str, tuple[list[str], str]] = {}
    for err in exc.errors():
        key = ".".join(filter(None, (where, _dotted(err["loc"], data, err["type"]))))
        got = "" if err["type"] in ("extra_forbidden", "missing", "value_error") else _shown(err["input"])
        msgs, _ = by_key.setdefault(key, ([], got))
        msg = _message(err)
        if msgs and msg.startswith(SHOULD):  # "should be 'auto' or should be a boolean": say it once
            msg = msg[len(SHOULD) :]
        if msg not in msgs:
            msgs.append(msg)
    lines = [
        f"{key}: {' or '.join(msgs)}" + (f" (got {got})" if got else "")
        for key, (msgs, got) in by_key.items()
    ]
    return "; ".join(lines)


def checked(model: type[Section], values: Mapping[str, Any] | None, where: str, file: str | Path) -> Section:
    """``values`` as a ``model`` (defaults filled in); a bad one is a one-line WaferSageError."""
    data = dict(values or {})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise WaferSageError(file, "invalid params", problems(exc, data, where)) from None


def validated(
    section: str, values: Mapping[str, Any] | None = None, file: str | Path = "params.yaml"
) -> dict[str, Any]:
    """The ``section`` of params.yaml checked, as a plain dict with every default filled in (JSON
    types, as the YAML file would give them: lists, strings)."""
    return checked(SECTIONS[section], values, section, file).model_dump(mode="json")


def schema_json() -> str:
    """The JSON schema of params.yaml, as committed in ``params.schema.json``."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **ParamsFile.model_json_schema()}
    return json.dumps(schema, indent=2) + "\n"
