"""Great Expectations gates: a suite kept as JSON, run as a checkpoint over a DataFrame."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from wafersage.environment import apply_defaults
from wafersage.errors import WaferSageError
from wafersage.wafers import taxonomy

apply_defaults()


@dataclass
class GateResult:
    """Outcome of one gate: success, and per expectation what failed on how many rows."""

    success: bool
    evaluated: int
    failures: list[str]
    docs_index: Path | None


#: Suite values filled from the active taxonomy at gate time (a kwarg whose value is the key).
TAXONOMY_VALUES: dict[str, Any] = {
    "$taxonomy.classes": lambda t: list(t.classes),
    "$taxonomy.patterns": lambda t: list(t.patterns),
    "$taxonomy.label_regex": lambda t: t.label_regex(),
}


def resolved(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with each ``$taxonomy.*`` kwarg value replaced by the active taxonomy's (the class
    value sets and the label regex are never hard-coded in a suite)."""
    t = taxonomy.active()

    def fill(v: Any) -> Any:
        return TAXONOMY_VALUES[v](t) if isinstance(v, str) and v in TAXONOMY_VALUES else v

    return {
        **spec,
        "expectations": [
            {**e, "kwargs": {k: fill(v) for k, v in (e.get("kwargs") or {}).items()}}
            for e in spec["expectations"]
        ],
    }


def load_suite(path: str | Path) -> dict[str, Any]:
    """The suite JSON (GX 1.x ``ExpectationSuite`` shape: ``name`` and ``expectations``), its
    ``$taxonomy.*`` values filled (:func:`resolved`)."""
    path = Path(path)
    if not path.exists():
        raise WaferSageError(path, "expectation suite not found")
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WaferSageError(path, "expectation suite is not valid JSON", str(exc)) from None
    if not isinstance(suite, dict) or "expectations" not in suite:
        raise WaferSageError(path, "expectation suite needs 'name' and 'expectations'")
    return resolved(suite)


def _describe(res: Any) -> str:
    cfg = res.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
    r = res.result or {}
    n = r.get("unexpected_count")
    detail = f"{n} of {r.get('element_count')} rows unexpected" if n is not None else ""
    if "observed_value" in r:
        obs = r["observed_value"]
        detail = (detail + "; " if detail else "") + f"observed {str(obs)[:120]}"
    partial = r.get("partial_unexpected_list")
    if partial:
        detail += f"; e.g. {str(partial[:3])[:120]}"
    col = kwargs.get("column", kwargs.get("column_list", ""))
    return f"{cfg.type}({col}) failed: {detail}".strip()


def run_gate(name: str, df: pd.DataFrame, suite_path: str | Path, docs_dir: str | Path | None) -> GateResult:
    """Validate ``df`` with the suite at ``suite_path`` through a GX checkpoint; write the HTML data
    docs under ``docs_dir``. Returns the result; does not raise on failed expectations."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    spec = load_suite(suite_path)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    actions = []
    if docs_dir is not None:
        docs_dir = Path(docs_dir).resolve()
        ctx.add_data_docs_site(
            site_name="local",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        actions.append(UpdateDataDocsAction(name="update_data_docs", site_names=["local"]))
    source = ctx.data_sources.add_pandas(name=f"{name}_source")
    asset = source.add_dataframe_asset(name=name)
    batch_def = asset.add_batch_definition_whole_dataframe(f"{name}_batch")
    suite = ctx.suites.add(gx.ExpectationSuite(name=spec.get("name", name)))
    for exp in spec["expectations"]:
        try:
            cls = gx.expectations.registry.get_expectation_impl(exp["type"])
            suite.add_expectation(cls(**exp.get("kwargs", {})))
        except Exception as exc:  # noqa: BLE001 - a bad suite entry is a config error
            raise WaferSageError(suite_path, "invalid expectation", f"{exp.get('type')}: {exc}") from None
    vd = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=f"{name}_vd", data=batch_def, suite=suite)
    )
    cp = ctx.checkpoints.add(
        gx.Checkpoint(name=f"{name}_checkpoint", validation_definitions=[vd], actions=actions)
    )
    result = cp.run(batch_parameters={"dataframe": df})
    run = next(iter(result.run_results.values()))
    failures = [_describe(r) for r in run.results if not r.success]
    index = docs_dir / "index.html" if docs_dir is not None else None
    return GateResult(
        success=bool(result.success), evaluated=len(run.results), failures=failures, docs_index=index
    )
