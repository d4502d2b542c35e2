"""The typed params.yaml (``wafersage.config``): the file and the models' defaults cannot drift, the
committed JSON schema is current, and every unknown key or wrong value is one line naming the
dotted key."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fast_params import fast_params

from wafersage.cli import ERROR_EXIT, main
from wafersage.config import PROFILE_KEYS, SECTIONS, schema_json, validated
from wafersage.errors import WaferSageError
from wafersage.params import load_section
from wafersage.tracking import flatten

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
#: The stage sections of params.yaml (without the profile keys)
STAGE_PARAMS = {k: v for k, v in PARAMS.items() if k not in PROFILE_KEYS}


def mappings(value: Any, path: str) -> list[str]:
    """Dotted paths of every mapping in ``value`` (itself included), list items as ``[i]``."""
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in mappings(v, f"{path}[{i}]")]
    if not isinstance(value, dict):
        return []
    return [path, *(p for k, v in value.items() for p in mappings(v, f"{path}.{k}"))]


def with_key(params: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``params`` with ``dotted`` (``a.b[0].c``) set to ``value``."""
    out = json.loads(json.dumps(params))
    *parents, last = dotted.replace("[", ".[").split(".")
    node = out
    for part in parents:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    node[last] = value
    return out


def one_line_error(tmp_path: Path, params: dict[str, Any], section: str) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(WaferSageError) as e:
        load_section(section, path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_params_yaml_has_every_section_and_sets_exactly_the_defaults():
    """Every section of params.yaml validates, and validating it gives the model's defaults: the
    file documents the defaults and changes none, so the two cannot drift apart."""
    assert list(STAGE_PARAMS) == list(SECTIONS)
    for section, model in SECTIONS.items():
        got, default = flatten(validated(section, PARAMS[section])), flatten(model().model_dump(mode="json"))
        assert {k: v for k, v in got.items() if default.get(k) != v} == {}, section


def test_a_missing_file_or_section_gives_the_defaults(tmp_path):
    assert load_section("sft", tmp_path / "absent.yaml") == SECTIONS["sft"]().model_dump()
    (tmp_path / "params.yaml").write_text("sft:\n  max_steps: 7\nserve:\n")
    assert load_section("sft", tmp_path / "params.yaml")["max_steps"] == 7
    assert load_section("serve", tmp_path / "params.yaml") == SECTIONS["serve"]().model_dump()


def test_the_committed_schema_is_current_and_params_yaml_names_it():
    assert (ROOT / "params.schema.json").read_text() == schema_json(), (
        "regenerate it: wafersage params-schema > params.schema.json"
    )
    assert (ROOT / "params.yaml").read_text().splitlines()[0] == (
        "# yaml-language-server: $schema=params.schema.json"
    )


def test_the_schema_accepts_params_yaml_and_the_fast_params_and_refuses_a_typo():
    import jsonschema

    schema = json.loads(schema_json())
    jsonschema.validate(PARAMS, schema)
    jsonschema.validate(fast_params(ROOT / "params.yaml"), schema)
    with pytest.raises(jsonschema.ValidationError, match="flag_treshold"):
        jsonschema.validate(with_key(PARAMS, "clean.flag_treshold", 0.5), schema)


@pytest.mark.parametrize("section", list(STAGE_PARAMS))
def test_an_unknown_key_of_a_section_is_one_line_naming_it(section, tmp_path):
    msg = one_line_error(tmp_path, with_key(PARAMS, f"{section}.misspelt_key", 1), section)
    assert msg.endswith(f"params.yaml: invalid params ({section}.misspelt_key: unknown key)")


#: Mappings keyed by free names (class names), not by params keys.
FREE_MAPPINGS = {"taxonomy.synonyms"}
NESTED = [
    p
    for section, value in STAGE_PARAMS.items()
    for p in mappings(value, section)
    if p != section and p not in FREE_MAPPINGS
]


@pytest.mark.parametrize("mapping", NESTED)
def test_an_unknown_key_of_a_nested_mapping_is_one_line_naming_it(mapping, tmp_path):
    msg = one_line_error(tmp_path, with_key(PARAMS, f"{mapping}.misspelt_key", 1), mapping.split(".")[0])
    assert f"({mapping}.misspelt_key: unknown key)" in msg


@pytest.mark.parametrize(
    ("dotted", "value", "detail"),
    [
        ("describe.openai.base_ur", "http://x", "describe.openai.base_ur: unknown key"),
        ("sft.max_steps", "many", "sft.max_steps: input should be a valid integer"),
        ("sft.max_steps", 0, "sft.max_steps: input should be greater than or equal to 1 (got 0)"),
        ("sft.lora.enabled", "yes", "sft.lora.enabled: input should be 'auto' or a valid boolean"),
        ("gspo.num_generations", 3, "gspo: per_device_train_batch_size must divide by num_generations"),
        ("gspo.curriculum.stages[1].steps", 0, "gspo.curriculum.stages[1].steps: input should be greater"),
        ("clean.weights.knn", "much", "clean.weights.knn: input should be a valid number"),
        ("specialist.stack_temperature", 0, "specialist.stack_temperature: input should be greater than 0"),
        ("vqa.composed_share", 1.5, "vqa.composed_share: input should be less than or equal to 1"),
        ("ingest.source", "wm911k", "ingest.source: input should be 'synthetic', 'wm811k'"),
        ("split", {"train": 0, "val": 0.5, "test": 0.5}, "split: train must be more than 0"),
        ("evaluate.real_val", "on", "evaluate.real_val: input should be 'auto', 'off' or False"),
        ("promote.metric", "bleu", "promote.metric: input should be 'rule_score'"),
        ("register.model_name", " ", "register.model_name: must not be empty"),
        ("model.tiny.text.mrope_section", [8, 8, 8], "model.tiny: text.mrope_section must sum to head_dim/2"),
        ("align.fit_on", "external", "align: fit_on: external needs align.external"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_key(dotted, value, detail, tmp_path):
    msg = one_line_error(tmp_path, with_key(PARAMS, dotted, value), dotted.split(".")[0])
    assert f"invalid params ({detail}" in msg


def test_an_unknown_section_is_refused(tmp_path):
    msg = one_line_error(tmp_path, {**PARAMS, "clen": {"folds": 3}}, "clean")
    assert msg.endswith("invalid params (clen: unknown section)")


def test_judge_openai_needs_no_base_url_key():
    p = validated("judge", {"judge": "openai", "openai": {"model": "m"}})
    assert p["openai"]["base_url"] == SECTIONS["judge"]().openai.base_url


@pytest.mark.parametrize(
    ("command", "dotted"), [("clean", "clean.flag_treshold"), ("promote", "promote.metrc")]
)
def test_a_stage_command_exits_2_with_one_line(command, dotted, tmp_path, capsys, monkeypatch):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(with_key(PARAMS, dotted, 1)))
    monkeypatch.setattr(sys, "argv", ["wafersage", command, "--params", str(path)])
    with pytest.raises(SystemExit) as ended:
        main()
    err = capsys.readouterr().err
    assert ended.value.code == ERROR_EXIT
    assert err == f"wafersage: error: {path}: invalid params ({dotted}: unknown key)\n"
