"""One split decided once: lots stay whole, the seed decides, no label does; the encoder, the cleaner
and the VQA tables obey it, so nothing trained sees a test wafer's label or map."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import raw_table

from wafersage.errors import WaferSageError
from wafersage.wafers.encoding import FAIL, PASS
from wafersage.wafers.rawtable import decode_map, write_raw
from wafersage.wafers.splits import SPLITS, assign_splits, read_splits, split_table, splits_of

RATIOS = {"train": 0.7, "rl": 0.1, "val": 0.1, "test": 0.1}


def test_lots_stay_whole_shares_follow_the_ratios_and_the_seed_decides():
    ids = [f"w{i}" for i in range(1000)]
    lots = [f"L{i // 4}" if i % 10 else None for i in range(1000)]  # every tenth wafer has no lot
    a = assign_splits(ids, lots, RATIOS, 0)
    by_lot = pd.DataFrame({"lot": lots, "split": [a[w] for w in ids]}).dropna()
    assert (by_lot.groupby("lot")["split"].nunique() == 1).all()
    shares = pd.Series(a).value_counts(normalize=True)
    for s, r in RATIOS.items():
        assert abs(shares[s] - r) < 0.01, shares
    assert assign_splits(ids, lots, RATIOS, 0) == a
    assert assign_splits(ids, lots, RATIOS, 1) != a


def test_small_sets_still_get_val_and_test():
    a = assign_splits([f"w{i}" for i in range(5)], [None] * 5, RATIOS, 0)
    assert set(a.values()) == set(SPLITS)


def test_labels_do_not_decide_the_split():
    df = raw_table(n_per_class=4)
    flipped = df.assign(labels=[["Scratch"]] * len(df))
    pd.testing.assert_frame_equal(split_table(df, RATIOS, 0), split_table(flipped, RATIOS, 0))


@pytest.mark.parametrize(
    ("table", "rule"),
    [
        (pd.DataFrame({"wafer_id": ["a"], "split": ["holdout"]}), "unknown split ('holdout')"),
        (pd.DataFrame({"wafer_id": ["a", "a"], "split": ["train", "test"]}), "wafer in more than one row"),
        (pd.DataFrame({"wafer_id": ["a"]}), "missing column (split)"),
    ],
)
def test_a_bad_split_table_is_a_one_line_error(tmp_path: Path, table: pd.DataFrame, rule: str):
    path = tmp_path / "splits.parquet"
    table.to_parquet(path)
    with pytest.raises(WaferSageError) as exc:
        read_splits(path)
    assert rule in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_a_wafer_without_a_split_is_a_one_line_error(tmp_path: Path):
    splits = pd.Series(["train"], index=["a"])
    with pytest.raises(WaferSageError, match="wafer has no split .* \\(b\\)"):
        splits_of(splits, ["a", "b"], tmp_path / "splits.parquet")


# --- the stages obey it -------------------------------------------------------------------------


@pytest.fixture
def leak_env(tmp_path: Path, monkeypatch) -> tuple[Path, pd.DataFrame, Path]:
    """A raw table, its split stage output, and a second raw table whose every test-split wafer has
    another label and another map."""
    from wafersage.stages import split as split_stage

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    df = raw_table(n_per_class=6, size=24)
    write_raw(df, tmp_path / "raw.parquet")
    splits = tmp_path / "splits.parquet"
    m = split_stage.run({}, tmp_path / "raw.parquet", splits, tmp_path / "split.json")
    assert m["test"]["wafers"] > 0 and m["gate"]["success"]
    assert sum(m[s]["wafers"] for s in SPLITS) == len(df)
    test = read_splits(splits).reindex(df["wafer_id"]).to_numpy() == "test"
    changed = df.copy()
    changed["labels"] = [["Near-full"] if t else list(v) for v, t in zip(df["labels"], test, strict=True)]
    changed["map"] = [
        np.where(decode_map(b, r, c) == PASS, FAIL, decode_map(b, r, c)).tobytes() if t else b
        for b, r, c, t in zip(df["map"], df["rows"], df["cols"], test, strict=True)
    ]
    write_raw(changed, tmp_path / "raw_changed.parquet")
    return tmp_path, df[test], splits


def _folder_md5(folder: Path) -> str:
    h = hashlib.md5()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_no_test_split_label_or_map_reaches_the_encoder(leak_env):
    from test_vision import FAST, SIZE, TINY

    from wafersage.stages import pretrain_vision

    tmp, _, splits = leak_env
    hashes = []
    for name in ("raw", "raw_changed"):
        out = tmp / f"vision_{name}"
        m = pretrain_vision.run(
            {**FAST, "max_steps": 6}, tmp / f"{name}.parquet", out, tmp / "m.json", SIZE, TINY, splits=splits
        )
        hashes.append(_folder_md5(out))
    assert m["n_train"] == int((read_splits(splits) == "train").sum())
    assert hashes[0] == hashes[1]


def test_the_cleaner_leaves_test_labels_as_given_and_fits_without_them(leak_env, repo_root):
    from wafersage.stages import clean

    tmp, test_rows, splits = leak_env
    params = {
        "embedding": "none",
        "min_kept_per_class": 0,
        "suite": str(repo_root / "expectations/clean.json"),
        "class_suite": str(repo_root / "expectations/clean_classes.json"),
    }
    tables = []
    for name in ("raw", "raw_changed"):
        m = clean.run(
            params, tmp / f"{name}.parquet", tmp / f"{name}_labels.parquet", tmp / "m.json", tmp / name
        )
        tables.append(pd.read_parquet(tmp / f"{name}_labels.parquet").set_index("wafer_id"))
        assert m["test_as_given"] == len(test_rows)
    test_ids = test_rows["wafer_id"].astype(str)
    changed = tables[1].loc[test_ids]
    assert (changed["verdict"] == "keep").all() and (changed["tag"] == "test").all()
    assert all(list(v) == ["Near-full"] for v in changed["kept_labels"])
    # the train and val rows come out the same whatever the test wafers hold
    pd.testing.assert_frame_equal(tables[0].drop(index=test_ids), tables[1].drop(index=test_ids))


def test_test_truth_is_the_true_or_given_label_never_the_cleaners(tmp_path: Path):
    from wafersage.stages.describe import resolve_labels

    raw = raw_table(n_per_class=1)
    raw["true_labels"] = [["Donut"]] * len(raw)
    raw.loc[1, "true_labels"] = None
    clean = pd.DataFrame(
        {
            "wafer_id": raw["wafer_id"],
            "clean_labels": [["Loc"]] * len(raw),
            "verdict": ["flag", "relabel", *["keep"] * (len(raw) - 2)],
            "tag": None,
            "suggested": [["Scratch"]] * len(raw),
            "corrected": [False, False, False, True, *[False] * (len(raw) - 4)],
        }
    )
    split = np.array(["test", "test", "train", "test", *["train"] * (len(raw) - 4)])
    plan = resolve_labels(raw, clean, "exclude", split)
    assert plan["labels"].iat[0] == ["Donut"] and plan["exclude"].iat[0] is None  # flagged, kept: truth
    assert plan["labels"].iat[1] == list(raw["labels"].iat[1])  # no true label: the given one
    assert plan["labels"].iat[2] == ["Loc"]  # a train wafer takes the cleaner's labels
    assert plan["labels"].iat[3] == ["Loc"]  # an engineer's correction is truth too
    plan = resolve_labels(raw, clean, "exclude", None)
    assert plan["exclude"].iat[0] == "flagged"


def test_vqa_train_and_val_tables_do_not_move_when_test_wafers_change(leak_env, monkeypatch):
    from wafersage.stages import describe, rubrics, vqa

    tmp, _, splits = leak_env
    tables = []
    for name in ("raw", "raw_changed"):
        raw = tmp / f"{name}.parquet"
        d, r, v = tmp / f"{name}_d.jsonl", tmp / f"{name}_r.jsonl", tmp / f"{name}_vqa"
        describe.run({"labels_from": "raw"}, raw, None, d, tmp / "dm.json", render_size=64, splits=splits)
        rubrics.run({}, d, r, tmp / "rm.json")
        vqa.run({"seed": 0}, r, raw, v, tmp / "vm.json", render_size=64, splits=splits)
        tables.append({s: (v / f"{s}.parquet").read_bytes() for s in SPLITS})
    assert tables[0]["train"] == tables[1]["train"] and tables[0]["val"] == tables[1]["val"]
    assert tables[0]["test"] != tables[1]["test"]
    test = pd.read_parquet(tmp / "raw_changed_vqa" / "test.parquet")
    wanted = set(read_splits(splits)[lambda s: s == "test"].index)
    assert set(test["wafer_id"]) <= wanted and json.loads((tmp / "vm.json").read_text())["pairs"] > 0


def test_the_split_suite_names_every_split(repo_root):
    suite = json.loads((repo_root / "expectations/split.json").read_text())
    sets = [e["kwargs"]["value_set"] for e in suite["expectations"] if e["kwargs"].get("column") == "split"]
    assert sets == [list(SPLITS)]
