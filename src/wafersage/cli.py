"""The ``wafersage`` command: one subcommand a pipeline stage, plus tools (render).

Every stage command takes its inputs and outputs as options whose defaults are the dvc.yaml
paths, and reads its own section of params.yaml. Bad input exits non-zero with one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from wafersage import progress
from wafersage.environment import apply_defaults
from wafersage.errors import WaferSageError
from wafersage.wafers.taxonomy import activate

apply_defaults()

app = typer.Typer(
    help="Train an on-premise wafer-map vision-language model, reproducibly. Run the whole pipeline "
    "with `dvc repro`; each stage below is one step of it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Params = Annotated[Path, typer.Option(help="params.yaml to read this stage's section from.")]


@app.callback()
def _root(
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            help=f"{' | '.join(progress.LEVELS)}: log records and progress bars (bars at INFO and below). "
            f"Default: ${progress.LEVEL_ENV}, else INFO.",
        ),
    ] = None,
) -> None:
    """Options every command shares."""
    progress.configure(log_level)


def use_taxonomy(params: Path) -> None:
    """Activate params.yaml's ``taxonomy`` (the classes every stage reads) before a stage runs."""
    from wafersage.params import load_section

    activate(load_section("taxonomy", params))


def render_size(params: Path) -> int:
    """``render.size`` from params.yaml."""
    from wafersage.params import load_section

    return int(load_section("render", params)["size"])


@app.command()
def ingest(
    source: Annotated[
        str | None,
        typer.Option(
            help="synthetic | wm811k (LSWMD.pkl) | wm811k-processed | mixedwm38 (.npz) | "
            "mixedwm38-processed | png-folder | die-table (CSV/Parquet, one row a die; params "
            "ingest.die_table). Default: params ingest.source."
        ),
    ] = None,
    path: Annotated[
        list[Path] | None,
        typer.Option(help="Input file or folder (repeatable). Default: params ingest.path."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Canonical raw table (Parquet).")] = Path(
        "data/raw/wafers.parquet"
    ),
    metrics: Annotated[Path, typer.Option(help="Counts per class (JSON).")] = Path(
        "reports/ingest/metrics.json"
    ),
    params: Params = Path("params.yaml"),
) -> None:
    """Read wafer maps from a source (or generate synthetic ones) into the canonical raw table."""
    from wafersage.params import load_section
    from wafersage.stages import ingest as stage

    use_taxonomy(params)

    df = stage.run(load_section("ingest", params), out, metrics, source=source, paths=path or None)
    typer.echo(f"ingest: {len(df)} wafers -> {out}")


def _validate_raw(
    raw: Annotated[Path, typer.Option(help="Raw table to validate.")] = Path("data/raw/wafers.parquet"),
    suite: Annotated[
        Path | None, typer.Option(help="GX suite JSON. Default: params validate_raw.suite.")
    ] = None,
    report: Annotated[Path, typer.Option(help="Gate summary written on success.")] = Path(
        "reports/validate_raw/summary.json"
    ),
    docs: Annotated[Path, typer.Option(help="Folder for the GX HTML data docs.")] = Path(
        "reports/validate_raw/data_docs"
    ),
    params: Params = Path("params.yaml"),
) -> None:
    """Great Expectations gate on the raw table: stops the pipeline on bad data."""
    from wafersage.params import load_section
    from wafersage.stages import validate_raw as stage

    use_taxonomy(params)

    p = load_section("validate_raw", params)
    summary = stage.run(p, raw, suite or Path(p["suite"]), report, docs)
    typer.echo(f"validate_raw: {summary['wafers']} wafers passed {summary['expectations']} expectations")


app.command("validate-raw")(_validate_raw)
app.command("validate_raw", hidden=True)(_validate_raw)


Splits = Annotated[Path, typer.Option(help="The split stage's table (wafer_id -> train/val/test).")]
SPLITS_PATH = Path("data/split/splits.parquet")


@app.command()
def split(
    raw: Annotated[Path, typer.Option(help="Raw table (after the validate_raw gate).")] = Path(
        "data/raw/wafers.parquet"
    ),
    out: Annotated[Path, typer.Option(help="wafer_id, lot_id, split (Parquet).")] = SPLITS_PATH,
    metrics: Annotated[Path, typer.Option(help="Wafers, lots and labels per split (JSON).")] = Path(
        "reports/split/metrics.json"
    ),
    params: Params = Path("params.yaml"),
) -> None:
    """Every wafer to train / val / test, once (by lot, stratified by label); later stages obey it."""
    from wafersage.params import load_section
    from wafersage.stages import split as stage

    use_taxonomy(params)

    m = stage.run(load_section("split", params), raw, out, metrics)
    counts = ", ".join(f"{s} {m[s]['wafers']}" for s in ("train", "val", "test"))
    typer.echo(f"split: {m['wafers']} wafers: {counts} -> {out}")


def _pretrain_vision(
    raw: Annotated[Path, typer.Option(help="Raw table (after the validate_raw gate).")] = Path(
        "data/raw/wafers.parquet"
    ),
    splits: Splits = SPLITS_PATH,
    out: Annotated[Path, typer.Option(help="Encoder folder (vision tower + head).")] = Path("models/vision"),
    metrics: Annotated[Path, typer.Option(help="Probe / k-NN macro-F1 and wall time (JSON).")] = Path(
        "reports/vision/metrics.json"
    ),
    params: Params = Path("params.yaml"),
) -> None:
    """Pretrain the wafer vision encoder (the VLM's vision tower) on the train split's maps."""
    from wafersage.params import load_section
    from wafersage.stages import pretrain_vision as stage

    use_taxonomy(params)

    size = render_size(params)
    tiny = load_section("model", params)["tiny"]
    p = load_section("pretrain_vision", params)
    m = stage.run(p, raw, out, metrics, image_size=size, tiny=tiny, splits=splits)
    typer.echo(
        f"pretrain_vision: {m['steps']} steps in {m['train_wall_s']:.0f} s, linear probe macro-F1 "
        f"{m['linear_probe_macro_f1']}, k-NN {m['knn_macro_f1']} -> {out}"
    )


app.command("pretrain-vision")(_pretrain_vision)
app.command("pretrain_vision", hidden=True)(_pretrain_vision)


@app.command()
def clean(
    raw: Annotated[Path, typer.Option(help="Raw table (after the validate_raw gate).")] = Path(
        "data/raw/wafers.parquet"
    ),
    vision: Annotated[Path, typer.Option(help="Encoder (used when clean.embedding: vision).")] = Path(
        "models/vision"
    ),
    splits: Splits = SPLITS_PATH,
    out: Annotated[Path, typer.Option(help="Cleaned label table (Parquet).")] = Path(
        "data/clean/labels.parquet"
    ),
    metrics: Annotated[Path, typer.Option(help="Verdict counts and detection scores (JSON).")] = Path(
        "reports/clean/metrics.json"
    ),
    reports: Annotated[Path, typer.Option(help="Folder: plot data, review page, gate docs.")] = Path(
        "reports/clean"
    ),
    corrections: Annotated[
        Path, typer.Option(help="Reviewed labels (CSV wafer_id,label[,note]); a missing file is none.")
    ] = Path("data/review/corrections.csv"),
    params: Params = Path("params.yaml"),
) -> None:
    """Find wrong labels (clustering, outlier and classifier scores), apply the engineer's
    corrections and write the cleaned labels."""
    from wafersage.params import load_section
    from wafersage.stages import clean as stage

    use_taxonomy(params)

    size = render_size(params)
    m = stage.run(
        load_section("clean", params),
        raw,
        out,
        metrics,
        reports,
        vision=vision,
        render_size=size,
        splits=splits,
        corrections=corrections,
    )
    for note in m["notes"]:
        typer.echo(f"clean: note: {note}")
    fixed = m["corrections"]
    typer.echo(
        f"clean: {m['wafers']} wafers, kept {m['kept_fraction']:.1%}, flagged {m['flagged']}, "
        f"relabelled {m['relabelled']}, corrected {fixed['applied']} "
        f"({fixed['agreed_with_cleaner']} as the cleaner suggested) -> {out}"
    )


@app.command()
def describe(
    raw: Annotated[Path, typer.Option(help="Raw table.")] = Path("data/raw/wafers.parquet"),
    clean: Annotated[
        Path, typer.Option(help="Cleaned labels (used when describe.labels_from is clean).")
    ] = Path("data/clean/labels.parquet"),
    splits: Splits = SPLITS_PATH,
    out: Annotated[Path, typer.Option(help="Attributes and descriptions (JSON lines).")] = Path(
        "data/describe/descriptions.jsonl"
    ),
    metrics: Annotated[Path, typer.Option(help="Counts (JSON).")] = Path("reports/describe/metrics.json"),
    params: Params = Path("params.yaml"),
) -> None:
    """Analytic attributes and descriptions of every wafer (analytic backend or a VLM endpoint)."""
    from wafersage.params import load_section
    from wafersage.stages import describe as stage

    use_taxonomy(params)

    p = load_section("describe", params)
    size = render_size(params)
    s = stage.run(p, raw, clean, out, metrics, render_size=size, splits=splits)
    typer.echo(f"describe: {s['wafers']} of {s['wafers_in']} wafers described ({s['backend']}) -> {out}")


@app.command()
def rubrics(
    descriptions: Annotated[Path, typer.Option(help="The describe stage's output.")] = Path(
        "data/describe/descriptions.jsonl"
    ),
    out: Annotated[Path, typer.Option(help="Rubrics (JSON lines).")] = Path("data/rubrics/rubrics.jsonl"),
    metrics: Annotated[Path, typer.Option(help="Counts (JSON).")] = Path("reports/rubrics/metrics.json"),
    params: Params = Path("params.yaml"),
) -> None:
    """Structured rubrics (must_hit / must_avoid per dimension) with knowledge-base root causes."""
    from wafersage.params import load_section
    from wafersage.stages import rubrics as stage

    use_taxonomy(params)

    s = stage.run(load_section("rubrics", params), descriptions, out, metrics)
    typer.echo(f"rubrics: {s['wafers']} rubrics -> {out}")


@app.command()
def vqa(
    rubrics: Annotated[Path, typer.Option(help="The rubrics stage's output.")] = Path(
        "data/rubrics/rubrics.jsonl"
    ),
    raw: Annotated[Path, typer.Option(help="Raw table (maps for the images).")] = Path(
        "data/raw/wafers.parquet"
    ),
    splits: Splits = SPLITS_PATH,
    out: Annotated[Path, typer.Option(help="Folder of train/val/test Parquet tables.")] = Path("data/vqa"),
    metrics: Annotated[Path, typer.Option(help="Counts and attribute accuracy (JSON).")] = Path(
        "reports/vqa/metrics.json"
    ),
    params: Params = Path("params.yaml"),
) -> None:
    """Rubric-guided QA pairs with rendered maps, in the split stage's train/val/test tables."""
    from wafersage.params import load_section
    from wafersage.stages import vqa as stage

    use_taxonomy(params)

    size = render_size(params)
    s = stage.run(load_section("vqa", params), rubrics, raw, out, metrics, render_size=size, splits=splits)
    typer.echo(f"vqa: {s['pairs']} pairs over {s['wafers']} wafers -> {out}")


def _validate_vqa(
    vqa_dir: Annotated[Path, typer.Option("--vqa", help="Folder of VQA tables.")] = Path("data/vqa"),
    rubrics: Annotated[Path, typer.Option(help="Rubrics the pairs refer to.")] = Path(
        "data/rubrics/rubrics.jsonl"
    ),
    suite: Annotated[
        Path | None, typer.Option(help="GX suite JSON. Default: params validate_vqa.suite.")
    ] = None,
    report: Annotated[Path, typer.Option(help="Gate summary written on success.")] = Path(
        "reports/validate_vqa/summary.json"
    ),
    docs: Annotated[Path, typer.Option(help="Folder for the GX HTML data docs.")] = Path(
        "reports/validate_vqa/data_docs"
    ),
    params: Params = Path("params.yaml"),
) -> None:
    """Great Expectations gate on the VQA tables: stops the pipeline on bad pairs."""
    from wafersage.params import load_section
    from wafersage.stages import validate_vqa as stage

    use_taxonomy(params)

    p = load_section("validate_vqa", params)
    s = stage.run(p, vqa_dir, rubrics, suite or Path(p["suite"]), report, docs)
    typer.echo(f"validate_vqa: {s['pairs']} pairs passed {s['expectations']} expectations")


app.command("validate-vqa")(_validate_vqa)
app.command("validate_vqa", hidden=True)(_validate_vqa)


def _init_model(
    vqa_train: Annotated[Path, typer.Option(help="VQA train split (the tokenizer's corpus).")] = Path(
        "data/vqa/train.parquet"
    ),
    vision: Annotated[Path, typer.Option(help="Pretrained wafer encoder (the vision tower's start).")] = Path(
        "models/vision"
    ),
    out: Annotated[Path, typer.Option(help="Base model folder (save_pretrained model + processor).")] = Path(
        "models/base"
    ),
    specialist: Annotated[Path, typer.Option(help="Trained specialist to ship in the model folder.")] = Path(
        "models/specialist"
    ),
    params: Params = Path("params.yaml"),
) -> None:
    """Build the tiny default VLM (or load a local Qwen3-VL checkpoint) into models/base."""
    from wafersage.params import load_section
    from wafersage.stages import init_model as stage

    use_taxonomy(params)

    size = render_size(params)
    p = load_section("init_model", params)
    info = stage.run(
        p, load_section("model", params), vqa_train, vision, out, image_size=size, specialist=specialist
    )
    typer.echo(
        f"init_model: {info['base']} base, {info['params']:,} parameters"
        + (", with the specialist" if info["specialist"] else "")
        + f" -> {out}"
    )


@app.command()
def specialist(
    vqa: Annotated[Path, typer.Option(help="VQA tables folder (train and val splits).")] = Path("data/vqa"),
    out: Annotated[Path, typer.Option(help="Specialist folder (safetensors + JSON).")] = Path(
        "models/specialist"
    ),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON.")] = Path("reports/specialist/metrics.json"),
    oof: Annotated[
        Path, typer.Option(help="Out-of-fold probabilities of the train wafers (Parquet).")
    ] = Path("data/specialist/oof.parquet"),
    params: Params = Path("params.yaml"),
) -> None:
    """Train the defect-type specialist on the VQA train split (scored on val)."""
    from wafersage.params import load_section
    from wafersage.stages import specialist as stage

    use_taxonomy(params)

    m = stage.run(load_section("specialist", params), vqa, out, metrics, oof)
    typer.echo(
        f"specialist: {m['n_train']} train wafers, {m['steps']} steps, fitted in {m['train_wall_s']:.0f} s, "
        f"val type macro-F1 {m['val_type_macro_f1']} -> {out}"
    )


app.command("init-model")(_init_model)
app.command("init_model", hidden=True)(_init_model)


@app.command()
def sft(
    base: Annotated[Path, typer.Option(help="The init_model stage's output.")] = Path("models/base"),
    vqa_dir: Annotated[Path, typer.Option("--vqa", help="Folder of train/val/test VQA tables.")] = Path(
        "data/vqa"
    ),
    out: Annotated[Path, typer.Option(help="Fine-tuned model folder.")] = Path("models/sft"),
    metrics: Annotated[Path, typer.Option(help="Metrics (JSON).")] = Path("reports/sft/metrics.json"),
    checkpoints: Annotated[Path, typer.Option(help="Checkpoint root (a rerun resumes from it).")] = Path(
        "checkpoints/sft"
    ),
    rubrics: Annotated[Path, typer.Option(help="Rubrics (for the rule score).")] = Path(
        "data/rubrics/rubrics.jsonl"
    ),
    reward: Annotated[Path, typer.Option(help="The align stage's reward config (rule score).")] = Path(
        "models/reward/reward_config.json"
    ),
    specialist_oof: Annotated[
        Path | None, typer.Option(help="The specialist's out-of-fold file (grounds the training maps).")
    ] = None,
    params: Params = Path("params.yaml"),
) -> None:
    """Supervised fine-tuning with TRL on the VQA train split (assistant-only loss, early stopping)."""
    from wafersage.params import load_section
    from wafersage.stages import sft as stage

    use_taxonomy(params)

    m = stage.run(
        load_section("sft", params), base, vqa_dir, out, metrics, checkpoints, rubrics, reward, specialist_oof
    )
    if m:
        typer.echo(f"sft: {m['steps']} steps, type macro-F1 {m['type_macro_f1']:.3f} -> {out}")


@app.command()
def judge(
    vqa_dir: Annotated[Path, typer.Option("--vqa", help="Folder of the VQA tables (val split read).")] = Path(
        "data/vqa"
    ),
    rubrics: Annotated[Path, typer.Option(help="Rubric records (JSONL).")] = Path(
        "data/rubrics/rubrics.jsonl"
    ),
    pool: Annotated[Path, typer.Option(help="Calibration pool written (Parquet).")] = Path(
        "data/calibration/pool.parquet"
    ),
    out: Annotated[Path, typer.Option(help="Judge scores (Parquet).")] = Path("data/judge/scores.parquet"),
    metrics: Annotated[Path, typer.Option(help="Metrics (JSON).")] = Path("reports/judge/metrics.json"),
    absorbed: Annotated[
        Path, typer.Option(help="Folder of model outputs added to the pool (`wafersage absorb`).")
    ] = Path("calibration"),
    params: Params = Path("params.yaml"),
) -> None:
    """Score a calibration pool of graded answers with the configured judge (reference or LLM)."""
    from wafersage.params import load_section
    from wafersage.stages import judge as stage

    use_taxonomy(params)

    m = stage.run(load_section("judge", params), vqa_dir, rubrics, pool, out, metrics, absorbed)
    typer.echo(
        f"judge: {m['items']} answers to {m['pairs']} questions scored -> {out} "
        f"({m['absorbed_items']} absorbed model outputs, {m['absorbed_stale']} stale left out)"
    )


@app.command()
def absorb(
    outputs: Annotated[Path, typer.Option(help="The evaluate stage's model outputs on val pairs.")] = Path(
        "data/calibration/model_outputs.parquet"
    ),
    into: Annotated[Path, typer.Option(help="The version-controlled folder the judge stage reads.")] = Path(
        "calibration"
    ),
) -> None:
    """Add the evaluated models' answers to the judge-calibration pool of the next alignment."""
    from wafersage.score.calibration import absorb as absorb_outputs

    path, new = absorb_outputs(outputs, into)
    if new:
        typer.echo(
            f"absorb: wrote {path}; commit it (git add / dvc add), then `dvc repro` re-aligns the reward"
        )
    else:
        typer.echo(f"absorb: {path} already holds these outputs; nothing to do")


@app.command()
def align(
    pool: Annotated[Path, typer.Option(help="Calibration pool (Parquet).")] = Path(
        "data/calibration/pool.parquet"
    ),
    scores: Annotated[Path, typer.Option(help="Judge scores (Parquet).")] = Path("data/judge/scores.parquet"),
    rubrics: Annotated[Path, typer.Option(help="Rubric records (JSONL).")] = Path(
        "data/rubrics/rubrics.jsonl"
    ),
    out: Annotated[Path, typer.Option(help="Reward config the GSPO stage reads.")] = Path(
        "models/reward/reward_config.json"
    ),
    metrics: Annotated[Path, typer.Option(help="Metrics (JSON).")] = Path("reports/align/metrics.json"),
    scatter: Annotated[Path, typer.Option(help="Rule score vs judge plot data (CSV).")] = Path(
        "reports/align/scatter.csv"
    ),
    params: Params = Path("params.yaml"),
) -> None:
    """Fit the rule-score parameters to the judge by Bayesian optimisation (Optuna TPE)."""
    from wafersage.params import load_section
    from wafersage.stages import align as stage

    use_taxonomy(params)

    m = stage.run(load_section("align", params), pool, scores, rubrics, out, metrics, scatter)
    held, paper = m["spearman_heldout"], m["spearman_paper_default"]
    typer.echo(f"align: held-out Spearman {held:.3f} (paper default {paper:.3f}) vs the judge stage -> {out}")
    ext = m.get("external")
    if ext:
        typer.echo(
            f"align: external judge, held-out Spearman {ext['spearman_heldout']} fitted on it, "
            f"{ext.get('spearman_heldout_reference_fitted')} fitted on the judge stage, "
            f"{ext['spearman_heldout_paper_default']} paper default; reward fitted on {ext['fit_on']}"
        )


@app.command()
def gspo(
    sft_dir: Annotated[Path, typer.Option("--sft", help="The sft stage's output.")] = Path("models/sft"),
    vqa_dir: Annotated[Path, typer.Option("--vqa", help="Folder of the VQA tables (train/val read).")] = Path(
        "data/vqa"
    ),
    rubrics: Annotated[Path, typer.Option(help="Rubric records (JSONL).")] = Path(
        "data/rubrics/rubrics.jsonl"
    ),
    reward: Annotated[Path, typer.Option(help="The align stage's reward config.")] = Path(
        "models/reward/reward_config.json"
    ),
    out: Annotated[Path, typer.Option(help="GSPO-trained model folder.")] = Path("models/gspo"),
    metrics: Annotated[Path, typer.Option(help="Metrics (JSON).")] = Path("reports/gspo/metrics.json"),
    checkpoints: Annotated[Path, typer.Option(help="Checkpoint root (a rerun resumes from it).")] = Path(
        "checkpoints/gspo"
    ),
    specialist_oof: Annotated[
        Path | None, typer.Option(help="The specialist's out-of-fold file (grounds the training maps).")
    ] = None,
    params: Params = Path("params.yaml"),
) -> None:
    """Curriculum GSPO (TRL GRPOTrainer, sequence-level ratios) on the aligned rule reward."""
    from wafersage.params import load_section
    from wafersage.stages import gspo as stage

    use_taxonomy(params)

    m = stage.run(
        load_section("gspo", params),
        sft_dir,
        vqa_dir,
        rubrics,
        reward,
        out,
        metrics,
        checkpoints,
        oof=specialist_oof,
    )
    if m:
        typer.echo(
            f"gspo: {m['steps']} steps, reward {m['reward_mean_first']:.3f} -> {m['reward_mean_last']:.3f}, "
            f"dead groups {m['dead_group_rate']:.1%} -> {out}"
        )


@app.command()
def evaluate(
    vqa_dir: Annotated[
        Path, typer.Option("--vqa", help="Folder of the VQA tables (test split read).")
    ] = Path("data/vqa"),
    rubrics: Annotated[Path, typer.Option(help="Rubric records (JSONL).")] = Path(
        "data/rubrics/rubrics.jsonl"
    ),
    reward: Annotated[Path, typer.Option(help="The align stage's reward config.")] = Path(
        "models/reward/reward_config.json"
    ),
    model: Annotated[
        list[Path] | None,
        typer.Option(
            help="Model folder (repeatable). Default: models/base, models/sft, models/gspo present."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, items.parquet and plot data.")] = Path(
        "reports/evaluate"
    ),
    report: Annotated[Path, typer.Option(help="Self-contained HTML report.")] = Path("reports/index.html"),
    pool: Annotated[
        Path, typer.Option(help="Model outputs for the judge-calibration pool (Parquet).")
    ] = Path("data/calibration/model_outputs.parquet"),
    raw: Annotated[
        Path, typer.Option(help="Raw table: the train split's die-level maps for the trees baseline.")
    ] = Path("data/raw/wafers.parquet"),
    params: Params = Path("params.yaml"),
) -> None:
    """Answer the VQA test split with every model; rule, judge and defect-type scores with CIs; report."""
    from wafersage.params import load_section
    from wafersage.stages import evaluate as stage

    use_taxonomy(params)

    models = model or [
        p for p in (Path("models/base"), Path("models/sft"), Path("models/gspo")) if p.is_dir()
    ]
    m = stage.run(
        load_section("evaluate", params),
        load_section("judge", params),
        vqa_dir,
        rubrics,
        reward,
        models,
        out,
        report,
        pool,
        ingest=load_section("ingest", params),
        raw=raw,
    )
    models_m = {k: v for k, v in m.items() if isinstance(v, dict) and isinstance(v.get("rule_score"), float)}
    typer.echo("evaluate: " + ", ".join(f"{k} rule {v['rule_score']:.3f}" for k, v in models_m.items()))
    if "real_val" in m:
        rv = m["real_val"]
        typer.echo(
            f"evaluate: real val ({rv['n']} maps) type macro-F1 "
            + ", ".join(
                f"{k} {rv[k]['type_macro_f1']:.3f}" for k in [*models_m, "specialist", "trees"] if k in rv
            )
        )


@app.command()
def register(
    model: Annotated[
        Path | None,
        typer.Option(help="Model folder to register. Default: models/gspo if present, else models/sft."),
    ] = None,
    items: Annotated[Path, typer.Option(help="The evaluate stage's per-item test scores.")] = Path(
        "reports/evaluate/items.parquet"
    ),
    val_items: Annotated[
        Path, typer.Option(help="The evaluate stage's per-item val scores (promotion's evidence).")
    ] = Path("reports/evaluate/val_items.parquet"),
    metrics: Annotated[Path, typer.Option(help="The evaluate stage's metrics.")] = Path(
        "reports/evaluate/metrics.json"
    ),
    out: Annotated[Path, typer.Option(help="Registration record (JSON).")] = Path(
        "reports/register/registered.json"
    ),
    params: Params = Path("params.yaml"),
) -> None:
    """Log the model to MLflow as a pyfunc, register it and give it alias 'challenger'."""
    from wafersage.params import load_section
    from wafersage.stages import register as stage

    use_taxonomy(params)

    folder = model or (Path("models/gspo") if Path("models/gspo").is_dir() else Path("models/sft"))
    section = load_section("register", params)
    r = stage.run(section, folder, items, val_items, metrics, out, params_file=params)
    typer.echo(f"register: {r['model_name']} version {r['version']} ({r['source']}) @challenger")


@app.command()
def promote(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and print; change nothing.")] = False,
    params: Params = Path("params.yaml"),
) -> None:
    """Move alias 'champion' to the challenger if it beats the champion on the gate metric."""
    import json

    from wafersage.params import load_section
    from wafersage.registry.promotion import promote as run_promote

    name = load_section("register", params)["model_name"]
    d = run_promote(name, load_section("promote", params), dry_run=dry_run)
    typer.echo(json.dumps(d, sort_keys=True, default=str))
    verdict = "promoted" if d["promote"] else "not promoted"
    typer.echo(
        f"promote: version {d['challenger_version']} {verdict}{' (dry run)' if dry_run else ''}: {d['rule']}"
    )


ModelOpt = Annotated[
    str | None,
    typer.Option(
        help="Local model folder (save_pretrained) or models:/ URI. Default: models:/<name>@champion."
    ),
]


@app.command()
def ask(
    map_path: Annotated[
        Path, typer.Argument(metavar="MAP", help="A .npy canonical map, a .png, or a folder.")
    ],
    question: Annotated[str, typer.Argument(help="The question to ask about each map.")],
    model: ModelOpt = None,
    out: Annotated[Path | None, typer.Option(help="JSON lines written here (default: stdout).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length cap in tokens.")] = 48,
    batch_size: Annotated[int, typer.Option(help="Maps answered per batch.")] = 16,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes sharing a folder's maps (each a share of the cores); 2 on a quiet 2-core box.",
        ),
    ] = 1,
    params: Params = Path("params.yaml"),
) -> None:
    """Answer a question about a wafer map (or each map in a folder): one JSON line a map."""
    import json

    from wafersage.params import load_section
    from wafersage.serving.ask import ask as run_ask
    from wafersage.serving.images import map_files
    from wafersage.serving.predictor import load_predictor

    map_files(map_path)  # a wrong path fails before the model loads
    name = load_section("register", params)["model_name"]
    predictor = load_predictor(model, name, batch_size=batch_size, max_new_tokens=max_new_tokens)
    records = run_ask(map_path, question, predictor, out, workers)
    if out is None:
        for r in records:
            typer.echo(json.dumps(r))
    else:
        typer.echo(f"ask: {len(records)} answer(s) -> {out}", err=True)


@app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address. Default: params serve.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Port. Default: params serve.port.")] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="DANGEROUS: serve on a non-loopback address without a bearer token "
            "(anyone who can reach the port can use the model).",
        ),
    ] = False,
    params: Params = Path("params.yaml"),
) -> None:
    """Serve the champion (or --model) as an OpenAI-compatible /v1/chat/completions endpoint.

    A bearer token is required on every endpoint but /health when the variable named by params
    serve.api_key_env is set; binding to a non-loopback address without one exits with status 2.
    """
    import os

    from wafersage.params import load_section
    from wafersage.serving.app import ServeLimits, bind_refusal, create_app
    from wafersage.serving.app import serve as run_server
    from wafersage.serving.predictor import load_predictor

    p = load_section("serve", params)
    host, port, key_env = host or p["host"], port or p["port"], p["api_key_env"]
    api_key = os.environ.get(key_env, "").strip() or None
    limits = ServeLimits(**{k: p[k] for k in ServeLimits.model_fields})
    refusal = bind_refusal(host, api_key, key_env, insecure_no_auth)
    if refusal:
        typer.echo(f"wafersage: error: {refusal}", err=True)
        raise typer.Exit(2)
    if api_key is None and insecure_no_auth:
        typer.echo(f"serve: WARNING: no authentication on {host} (--insecure-no-auth)", err=True)
    name = load_section("register", params)["model_name"]
    predictor = load_predictor(
        model, name, batch_size=p["generation_batch_size"], max_new_tokens=limits.max_tokens
    )
    model_id = str(model) if model and str(model).startswith("models:/") else f"wafersage-{predictor.name}"
    auth = f"bearer token from ${key_env}" if api_key else "no authentication"
    typer.echo(f"serve: {model_id} on http://{host}:{port}/v1 (health: /health; {auth})", err=True)
    server_app = create_app(predictor, limits, model_id=model_id, api_key=api_key, docs=p["docs"])
    run_server(server_app, host, port, limits)


@app.command()
def render(
    src: Annotated[Path, typer.Argument(help="A .npy map (canonical 0/1/2 uint8) or a folder of them.")],
    dst: Annotated[Path, typer.Argument(help="The PNG to write, or a folder of PNGs.")],
    size: Annotated[
        int | None, typer.Option(help="Image side in pixels (a multiple of 32). Default: params render.size.")
    ] = None,
    params: Params = Path("params.yaml"),
) -> None:
    """Render wafer maps to PNG with the pipeline's fixed palette."""
    from wafersage.wafers.render import render_path

    written = render_path(src, dst, size if size is not None else render_size(params))
    typer.echo(f"render: {len(written)} image(s) -> {dst}")


@app.command("params-schema")
def params_schema() -> None:
    """Print the JSON schema of params.yaml (committed as params.schema.json, which editors read)."""
    from wafersage.config import schema_json

    typer.echo(schema_json(), nl=False)


#: The exit status of a refused input (a ``WaferSageError``): 2, as for a usage error.
ERROR_EXIT = 2


def main() -> None:
    """Console entry point: a ``WaferSageError`` becomes one line on stderr and exit status
    :data:`ERROR_EXIT`."""
    try:
        app()
    except WaferSageError as exc:
        print(f"wafersage: error: {exc}", file=sys.stderr)
        sys.exit(ERROR_EXIT)
