"""tests/params_fast.yaml (the end-to-end test's small sizes) cannot go stale: every key it
overrides exists in params.yaml, and the merge keeps every other default."""

import pytest
import yaml
from fast_params import FAST, fast_params, load, stale_keys

from wafersage.params import merged


def test_every_override_names_a_key_of_params_yaml(repo_root):
    assert stale_keys(load(repo_root / "params.yaml"), load(FAST)) == []


def test_the_overrides_shrink_the_pipeline_and_keep_the_other_defaults(repo_root):
    base = load(repo_root / "params.yaml")
    fast = fast_params(repo_root / "params.yaml")
    assert fast.keys() == base.keys()
    assert fast["ingest"]["synthetic"]["n_wafers"] < base["ingest"]["synthetic"]["n_wafers"]
    assert fast["sft"]["max_steps"] < base["sft"]["max_steps"]
    assert fast["ingest"]["synthetic"]["seed"] == base["ingest"]["synthetic"]["seed"]
    assert fast["sft"]["lora"] == base["sft"]["lora"]
    assert fast["gspo"]["curriculum"]["enabled"] == base["gspo"]["curriculum"]["enabled"]
    assert [s["name"] for s in fast["gspo"]["curriculum"]["stages"]] == [
        s["name"] for s in base["gspo"]["curriculum"]["stages"]
    ]


def test_a_stale_override_is_found_and_refused(tmp_path, monkeypatch):
    base = {"sft": {"max_steps": 10, "lora": {"r": 16}}, "gspo": {"stages": [{"name": "a", "steps": 1}]}}
    overrides = {
        "sft": {"max_step": 1, "lora": {"r": 4, "rank": 4}},
        "gone": {"x": 1},
        "gspo": {"stages": [{"name": "a", "step": 1}]},
    }
    assert stale_keys(base, overrides) == ["sft.max_step", "sft.lora.rank", "gone", "gspo.stages[0].step"]
    assert stale_keys(base, {"sft": {"max_steps": {"nested": 1}}}) == ["sft.max_steps"]
    assert merged(base, {"sft": {"lora": {"r": 4}}}) == {**base, "sft": {"max_steps": 10, "lora": {"r": 4}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base))
    monkeypatch.setattr("fast_params.FAST", tmp_path / "fast.yaml")
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump({"sft": {"max_step": 1}}))
    with pytest.raises(KeyError, match="sft.max_step"):
        fast_params(tmp_path / "params.yaml")
