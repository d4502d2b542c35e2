"""The ``wafersage`` command: one subcommand a pipeline stage, plus tools (render).

Every stage command takes its inputs and outputs as options whose defaults are the dvc.yaml
paths, and reads its own section of params.yaml. Bad input exits non-zero with one line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from wafersage.errors import WaferSageError

for _key, _value in (
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("GX_ANALYTICS_ENABLED", "false"),
    ("DVC_NO_ANALYTICS", "1"),
    ("HF_HUB_OFFLINE", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_key, _value)

app = typer.Typer(
    help="Train an on-premise wafer-map vision-language model, reproducibly. Run the whole pipeline "
    "with `dvc repro`; each stage below is one step of it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Params = Annotated[Path, typer.Option(help="params.yaml to read this stage's section from.")]


@app.command()
def ingest(
    source: Annotated[
        str | None,
        typer.Option(
            help="synthetic | wm811k (LSWMD.pkl) | wm811k-processed | mixedwm38 (.npz) | "
            "mixedwm38-processed | png-folder. Default: params ingest.source."
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

    p = load_section("validate_raw", params)
    summary = stage.run(p, raw, suite or Path(p.get("suite", "expectations/raw.json")), report, docs)
    typer.echo(f"validate_raw: {summary['wafers']} wafers passed {summary['expectations']} expectations")


app.command("validate-raw")(_validate_raw)
app.command("validate_raw", hidden=True)(_validate_raw)


@app.command()
def render(
    src: Annotated[Path, typer.Argument(help="A .npy map (canonical 0/1/2 uint8) or a folder of them.")],
    dst: Annotated[Path, typer.Argument(help="The PNG to write, or a folder of PNGs.")],
    size: Annotated[int, typer.Option(help="Image side in pixels (a multiple of 32).")] = 96,
) -> None:
    """Render wafer maps to PNG with the pipeline's fixed palette."""
    from wafersage.render import render_path

    written = render_path(src, dst, size)
    typer.echo(f"render: {len(written)} image(s) -> {dst}")


def main() -> None:
    """Console entry point: a ``WaferSageError`` becomes one line on stderr and exit status 1."""
    try:
        app()
    except WaferSageError as exc:
        print(f"wafersage: error: {exc}", file=sys.stderr)
        sys.exit(1)
