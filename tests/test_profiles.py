"""params.yaml profiles: a preset merged over the sections it names, one `-S profile=...` away, and
every stage that reads a preset section re-runs when the profile or the presets change."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wafersage.errors import WaferSageError
from wafersage.params import load_section


def _params(tmp_path: Path, repo_root: Path, profile: str) -> Path:
    data = yaml.safe_load((repo_root / "params.yaml").read_text())
    data["profile"] = profile
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_real_profile_sets_gspo_the_specialist_and_evaluate_and_leaves_the_rest(tmp_path, repo_root):
    (tmp_path / "e").mkdir()
    embedded, real = _params(tmp_path / "e", repo_root, "embedded"), _params(tmp_path, repo_root, "real")
    plain, preset = load_section("gspo", embedded), load_section("gspo", real)
    assert [s["steps"] for s in plain["curriculum"]["stages"]] == [10, 10, 10]
    assert [s["steps"] for s in preset["curriculum"]["stages"]] == [80, 80, 80]
    assert [s["type_fraction"] for s in plain["curriculum"]["stages"]] == [None, None, None]
    assert [s["type_fraction"] for s in preset["curriculum"]["stages"]] == [1.0, 1.0, 1.0]
    assert preset["curriculum"]["enabled"] is True and preset["curriculum"]["learning_split"] == "rl"
    assert {k: v for k, v in preset.items() if k != "curriculum"} == {
        k: v for k, v in plain.items() if k != "curriculum"
    }
    assert load_section("sft", real) == load_section("sft", embedded)
    spec, spec_real = load_section("specialist", embedded), load_section("specialist", real)
    assert (spec["epochs"], spec["fold_epochs"], spec["combine"]) == (10, None, "blend")
    assert spec_real == {**spec, "epochs": 20, "combine": "stack", "stack_temperature": 5}
    ev, ev_real = load_section("evaluate", embedded), load_section("evaluate", real)
    assert (ev["unseen_pairs"], ev_real) == (200, {**ev, "unseen_pairs": 1000})


def test_a_section_override_holds_where_the_preset_is_silent(tmp_path, repo_root):
    """`-S specialist.lr=0.001` under the real profile holds; `-S specialist.epochs=5` does not
    move the preset's 20 (README: a preset wins over the sections it merges into)."""
    path = _params(tmp_path, repo_root, "real")
    data = yaml.safe_load(path.read_text())
    data["specialist"].update(lr=0.001, epochs=5)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_section("specialist", path)
    assert (spec["lr"], spec["epochs"]) == (0.001, 20)


def test_an_unknown_profile_is_a_one_line_error(tmp_path, repo_root):
    with pytest.raises(WaferSageError, match="profile must name a preset of profiles.*'fab'"):
        load_section("gspo", _params(tmp_path, repo_root, "fab"))
    path = _params(tmp_path, repo_root, "real")
    data = yaml.safe_load(path.read_text())
    data["profiles"]["real"]["gspo"] = [1, 2]  # a preset section that is no mapping
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(WaferSageError, match="profiles.real must map sections to mappings"):
        load_section("gspo", path)


def test_every_stage_reading_a_preset_section_depends_on_the_profile(repo_root):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    named = {section for preset in params["profiles"].values() for section in (preset or {})}
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    reading = {
        name: {str(p) for p in stage.get("params", []) if isinstance(p, str)}
        for name, stage in stages.items()
    }
    readers = {name for name, keys in reading.items() if keys & named}
    assert readers and "gspo" in readers
    for name in readers:
        assert {"profile", "profiles"} <= reading[name], name
