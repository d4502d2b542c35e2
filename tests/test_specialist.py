"""The specialist (a CNN over the map + geometric features blended with trees, shipped in the model
folder, its probabilities in the grounding line; out-of-fold probabilities for the training
prompts) and the trees baseline that real val compares against."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from vqa_tables import vqa_table, write_vqa

from wafersage.annotation.grounding import IMAGE, IMAGE_ATTRIBUTES, Grounder
from wafersage.errors import WaferSageError
from wafersage.evaluation import real_val, stats
from wafersage.modeling.specialist import (
    BLENDS,
    CONFIG,
    FOLDER,
    TREES,
    WEIGHTS,
    OutOfFold,
    Specialist,
    _inference,
    _planes,
    choose_blend,
    clauses_of,
    decide,
    fit,
    fit_out_of_fold,
    fit_stack,
    grounder_of,
    map_key,
    oof_table,
    pick_blend,
    ship,
    stack_inputs,
    stacked,
    tempered,
)
from wafersage.stages import specialist as stage
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.synthetic import SyntheticConfig, generate

FAST = {
    "size": 64,
    "width": 8,
    "epochs": 6,
    "batch_size": 32,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "label_smoothing": 0.05,
    "seed": 0,
    "threads": 1,
    "tta": False,
    "trees": True,
    "picture_features": False,
}


@pytest.fixture(scope="module")
def trained() -> tuple[Specialist, np.ndarray, list[list[str]]]:
    _, train_maps, _, train_labels = stage.wafer_maps(vqa_table(400, 64, seed=100), Path("train"))
    _, val_maps, _, val_labels = stage.wafer_maps(vqa_table(150, 64, seed=101), Path("val"))
    return fit(train_maps, train_labels, FAST), val_maps, val_labels


def test_it_learns_the_defect_types_of_unseen_wafers(trained):
    model, maps, labels = trained
    truth = [set(v) for v in labels]
    f1 = stats.ci(stats.macro_f1_metric(truth, model.predict(list(maps))), len(truth), 10)["value"]
    majority = max(set(map(frozenset, truth)), key=[frozenset(t) for t in truth].count)
    f1_majority = stats.ci(stats.macro_f1_metric(truth, [set(majority)] * len(truth)), len(truth), 10)[
        "value"
    ]
    assert f1 >= 0.7 and f1 - f1_majority >= 0.5


def test_a_refit_with_the_same_seed_saves_a_byte_identical_folder(tmp_path):
    """So the folder's hash moves only with the model."""
    _, maps, _, labels = stage.wafer_maps(vqa_table(60, 64, seed=7), Path("train"))
    p = {**FAST, "epochs": 1}
    models = [fit(maps, labels, p) for _ in range(2)]
    for name, model in zip("ab", models, strict=True):
        model.save(tmp_path / name)
    for f in (WEIGHTS, CONFIG, TREES):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    again = Specialist.load(tmp_path / "a")
    np.testing.assert_array_equal(again.probabilities(list(maps)), models[0].probabilities(list(maps)))


def test_saved_as_safetensors_skops_and_json_and_loads_to_the_same_probabilities(trained, tmp_path):
    import skops.io as sio

    model, maps, _ = trained
    assert model.trees is not None and model.config.blend == 0.5
    model.save(tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted([WEIGHTS, CONFIG, TREES])
    again = Specialist.load(tmp_path / "s")
    np.testing.assert_array_equal(again.probabilities(list(maps[:20])), model.probabilities(list(maps[:20])))
    cnn, trees = model.members(list(maps[:20]))
    assert not np.allclose(cnn, trees, atol=1e-3)
    np.testing.assert_allclose(model.probabilities(list(maps[:20])), 0.5 * cnn + 0.5 * trees)
    # a trees file holding any type beyond the fixed trusted list is refused, not loaded
    sio.dump({"trees": __import__("datetime").date(2020, 1, 1)}, tmp_path / "s" / TREES)
    with pytest.raises(WaferSageError, match="untrusted type"):
        Specialist.load(tmp_path / "s")
    sio.dump({"not": "a classifier"}, tmp_path / "s" / TREES)
    with pytest.raises(WaferSageError, match="not a classifier"):
        Specialist.load(tmp_path / "s")
    model.save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / CONFIG).read_text())
    (tmp_path / "s" / CONFIG).write_text(json.dumps({**cfg, "width": 16}))
    with pytest.raises(WaferSageError, match="do not match its config"):
        Specialist.load(tmp_path / "s")
    (tmp_path / "s" / CONFIG).write_text("{not json")
    with pytest.raises(WaferSageError, match="cannot load the specialist"):
        Specialist.load(tmp_path / "s")


def test_the_fast_forward_gives_the_networks_logits(trained):
    """Inference folds each batch norm into its convolution and runs channels-last: the logits of
    the trained network (batch-norm statistics away from the identity) to float rounding."""
    import torch

    model, maps, _ = trained
    bn = model.net.conv[0][1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var), atol=0.05)
    x = _planes(np.stack(maps[:40]))
    f = torch.randn(40, len(model.config.feature_mean), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, got = model.net(x, f), _inference(model.net)(x, f)
    assert (want - got).abs().max() < 1e-4
    assert (want - want.roll(1, 0)).abs().max() > 0.1  # logits that differ between maps


def test_eight_view_averaging_makes_it_blind_to_rotations_and_flips(trained):
    model, maps, _ = trained
    m = maps[:12]
    turned = [np.rot90(x).copy() for x in m]
    plain = Specialist(type(model.config)(**{**model.config.__dict__, "blend": 0.0}), model.net)
    assert not np.allclose(plain.probabilities(list(m)), plain.probabilities(turned), atol=1e-3)
    tta = Specialist(type(model.config)(**{**model.config.__dict__, "tta": True}), model.net, model.trees)
    np.testing.assert_allclose(tta.probabilities(list(m)), tta.probabilities(turned), atol=1e-5)
    np.testing.assert_allclose(
        tta.probabilities(list(m)), tta.probabilities([x[:, ::-1].copy() for x in m]), atol=1e-5
    )


def test_the_clause_names_the_most_probable_classes_first(trained):
    model, maps, _ = trained
    probs = model.probabilities(list(maps[:30]))
    for row, clause in zip(probs, model.clauses(list(maps[:30])), strict=True):
        names = [
            part.rsplit(" ", 1)[0] for part in clause.removeprefix("Specialist: ").rstrip(".").split(", ")
        ]
        assert 1 <= len(names) <= 3
        assert names[0] == model.config.classes[int(row.argmax())]
        assert clause.startswith("Specialist: ") and f"{round(100 * row.max())}%" in clause


def test_a_multi_label_clause_names_every_decided_label_past_the_top_three():
    names = ["Center", "Donut", "Loc", "Scratch", "Random"]
    row = np.array([[0.91, 0.62, 0.97, 0.55, 0.3]])
    assert clauses_of(row, names, multi_label=True) == [
        "Specialist: Loc 97%, Center 91%, Donut 62%, Scratch 55%."
    ]
    assert clauses_of(row, names) == ["Specialist: Loc 97%, Center 91%, Donut 62%."]
    low = np.array([[0.91, 0.01, 0.3, 0.2, 0.1]])
    assert clauses_of(low, names, multi_label=True) == ["Specialist: Center 91%, Loc 30%, Scratch 20%."]


def test_training_needs_labels_and_two_classes_and_known_keys(tmp_path):
    maps = np.ones((4, 64, 64), dtype=np.uint8)
    with pytest.raises(WaferSageError, match="at least two classes"):
        fit(maps, [["Center"]] * 4, FAST)
    with pytest.raises(WaferSageError, match="at least one known label"):
        fit(maps, [["Center"], [], ["Loc"], ["Loc"]], FAST)
    with pytest.raises(WaferSageError, match="wrong size"):
        fit(np.ones((4, 32, 32), dtype=np.uint8), [["Center"], ["Loc"]] * 2, FAST)
    with pytest.raises(WaferSageError, match=r"specialist.epoch: unknown key"):
        stage.run({"epoch": 3}, tmp_path, tmp_path / "out", tmp_path / "m.json", tmp_path / "oof.parquet")
    with pytest.raises(WaferSageError, match="specialist: folds must be 0"):
        stage.run({"folds": 1}, tmp_path, tmp_path / "out", tmp_path / "m.json", tmp_path / "oof.parquet")
    table = vqa_table(4, 64).drop(columns=["labels"])
    with pytest.raises(WaferSageError, match="lacks columns"):
        stage.wafer_maps(table, Path("train.parquet"))


def test_the_stage_and_the_model_folder_ship_it_and_every_prompt_reads_it(tmp_path, monkeypatch):
    from wafersage.serving.predictor import Predictor
    from wafersage.stages import init_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    vqa = write_vqa(tmp_path / "vqa", n_wafers=40, size=64)
    oof = tmp_path / "oof.parquet"
    m = stage.run(
        {"epochs": 1, "width": 4, "batch_size": 16}, vqa, tmp_path / "spec", tmp_path / "spec.json", oof
    )
    assert m["n_train"] == 40 and m["steps"] == 2 and m["oof_folds"] == 2
    assert m["trees_weight"] in BLENDS and set(m["val_type_macro_f1_by_trees_weight"]) == {
        str(w) for w in BLENDS
    }
    table = pd.read_parquet(oof)
    assert len(table) == 40 and table["wafer_id"].is_unique
    assert set(table["wafer_id"]) == set(pd.read_parquet(vqa / "train.parquet")["wafer_id"].astype(str))
    assert json.loads((tmp_path / "spec.json").read_text())["n_val"] == 10
    params = {"vision_init": "off", "vocab_size": 400, "grounding": IMAGE_ATTRIBUTES}
    args = (vqa / "train.parquet", Path("nowhere"))
    info = init_model.run(params, {}, *args, tmp_path / "base", 64, specialist=tmp_path / "spec")
    assert info["specialist"] and (tmp_path / "base" / FOLDER / WEIGHTS).exists()
    pred = Predictor(tmp_path / "base", max_new_tokens=2)
    image = pd.read_parquet(vqa / "val.parquet")["image"].iloc[0]
    from wafersage.modeling.vqa_data import pil_image

    text = pred.grounder.texts([pil_image(image)])[0]
    assert text.startswith("Map facts: ") and " Specialist: " in text
    # the specialist's verdict takes the rule guess's place; a folder from before keeps its guess
    facts = Grounder(IMAGE_ATTRIBUTES).texts([pil_image(image)])[0]
    assert "; rule guess " in facts and "rule guess" not in text and info["rule_guess"] is False
    assert facts.split("; rule guess ")[0] + "." == text.split(" Specialist: ")[0]
    older = grounder_of(tmp_path / "base", {k: v for k, v in info.items() if k != "rule_guess"})
    assert older.texts([pil_image(image)])[0] == f"{facts} Specialist: {text.split(' Specialist: ')[1]}"
    ship(tmp_path / "base", tmp_path / "copy")
    assert grounder_of(tmp_path / "copy", info).advisor is not None
    # training prompts read the stage's out-of-fold clauses; val maps the shipped specialist's
    train_image = pil_image(pd.read_parquet(vqa / "train.parquet")["image"].iloc[0])
    with_oof = grounder_of(tmp_path / "base", info, oof)
    oof_rows = table.set_index("wafer_id")
    wafer = str(pd.read_parquet(vqa / "train.parquet")["wafer_id"].iloc[0])
    names = pred.grounder.advisor.config.classes
    blend = pred.grounder.advisor.config.blend
    row = oof_rows.loc[wafer]
    probs = (1 - blend) * row[[f"cnn:{c}" for c in names]].to_numpy(float) + blend * row[
        [f"trees:{c}" for c in names]
    ].to_numpy(float)
    assert with_oof.texts([train_image])[0].endswith(clauses_of(probs[None], names)[0])
    assert with_oof.texts([pil_image(image)])[0] == text
    with pytest.raises(WaferSageError, match="specialist out-of-fold file not found"):
        grounder_of(tmp_path / "base", info, tmp_path / "missing.parquet")
    # the image-alone ablation ships no helper model, and switching it off does too
    alone = init_model.run(
        {**params, "grounding": IMAGE}, {}, *args, tmp_path / "alone", 64, tmp_path / "spec"
    )
    off = init_model.run({**params, "specialist": False}, {}, *args, tmp_path / "off", 64, tmp_path / "spec")
    assert not alone["specialist"] and not off["specialist"]
    assert not (tmp_path / "alone" / FOLDER).exists() and not (tmp_path / "off" / FOLDER).exists()
    with pytest.raises(WaferSageError, match="init_model.specialist: input should be a valid boolean"):
        init_model.run({**params, "specialist": "yes"}, {}, *args, tmp_path / "x", 64, tmp_path / "spec")
    with pytest.raises(WaferSageError, match="not render.size"):
        init_model.run(params, {}, *args, tmp_path / "x", 96, tmp_path / "spec")
    assert not (tmp_path / "x").exists()


def _raw(n: int, seed: int, mixed: float = 0.0) -> pd.DataFrame:
    cfg = {"n_wafers": n, "seed": seed, "noise_rate": 0.0, "mixed_fraction": mixed}
    raw = generate(SyntheticConfig.from_dict(cfg))
    raw["labels"] = [list(v) for v in raw["true_labels"]]
    return raw


def test_trees_answer_like_a_model_and_score_well_on_single_label_maps():
    train, val = _raw(500, 1), _raw(200, 2)
    answers = real_val.trees_answers(train, val, seed=0)
    assert len(answers) == len(val) and all(a.endswith(".") for a in answers)
    metrics, detail = real_val.score_models(
        val, {"trees": answers}, {"n_boot": 50, "seed": 0, "confidence": 0.95}
    )
    assert metrics["trees"]["type_macro_f1"] >= 0.7 and "trees" in detail


def test_trees_are_one_vs_rest_on_multi_label_data():
    train, val = _raw(600, 3, mixed=0.4), _raw(200, 4, mixed=0.4)
    answers = real_val.trees_answers(train, val, seed=0)
    assert any(" and " in a for a in answers)  # several classes named for some mixed maps


def test_training_maps_join_the_train_split_labels_to_the_die_level_maps(tmp_path):
    raw = _raw(30, 5)
    raw.to_parquet(tmp_path / "raw.parquet", index=False)
    train = vqa_table(30, 64, seed=5)
    train["labels"] = [["Loc"]] * len(train)  # the split's labels win over the raw table's
    train = train[train["wafer_id"].isin(raw["wafer_id"].iloc[:20])]
    train.to_parquet(tmp_path / "train.parquet", index=False)
    table = real_val.training_maps(tmp_path / "raw.parquet", tmp_path / "train.parquet")
    assert sorted(table["wafer_id"]) == sorted(raw["wafer_id"].iloc[:20])
    assert all(v == ["Loc"] for v in table["labels"])
    assert np.array_equal(
        decode_map(*table.loc[0, ["map", "rows", "cols"]]), decode_map(*raw.loc[0, ["map", "rows", "cols"]])
    )


def test_best_vs_trees_is_the_final_models_paired_difference():
    assert real_val.final_model(["base", "sft"]) == "sft"
    assert real_val.final_model(["sft", "base", "gspo"]) == "gspo"
    assert real_val.final_model(["trees"]) is None
    maps = pd.DataFrame({"labels": [["Center"], ["Loc"], ["none"], ["Scratch"]] * 25})
    truth = ["Center.", "Loc.", "none.", "Scratch."] * 25
    half = ["Center.", "Loc.", "Loc.", "Loc."] * 25  # Center F1 1, Loc 0.5, none 0, Scratch 0
    p = {"n_boot": 200, "seed": 0, "confidence": 0.95}
    metrics, _ = real_val.score_models(maps, {"sft": half, "gspo": truth, "trees": half}, p)
    assert metrics["trees"]["type_macro_f1"] == pytest.approx(0.375)
    best = metrics["best_vs_trees"]["type_macro_f1"]
    assert best["diff"] == pytest.approx(0.625) and best["ci_low"] > 0.5
    no_trees, _ = real_val.score_models(maps, {"sft": half}, p)
    assert "best_vs_trees" not in no_trees


def test_the_specialist_alone_answers_real_val_from_the_images_the_vlm_sees(trained, tmp_path):
    from wafersage.wafers.render import resample

    model, _, _ = trained
    model.save(tmp_path / "gspo" / FOLDER)
    maps = _raw(40, 6)
    answers = real_val.specialist_answers(tmp_path / "gspo", maps)
    cells = zip(maps["map"], maps["rows"], maps["cols"], strict=True)
    seen = [resample(decode_map(b, r, c), 64) for b, r, c in cells]
    assert answers == [" and ".join(sorted(s)) + "." for s in model.predict(seen)]
    assert real_val.specialist_answers(tmp_path / "sft", maps) is None


def test_the_stage_refuses_splits_of_different_image_sizes(tmp_path):
    vqa = write_vqa(tmp_path / "vqa", n_wafers=8, size=64)
    vqa_table(4, 96, seed=101).to_parquet(vqa / "val.parquet", index=False)
    with pytest.raises(WaferSageError, match="share one square size"):
        stage.run({"epochs": 1}, vqa, tmp_path / "spec", tmp_path / "m.json", tmp_path / "oof.parquet")
    assert not (tmp_path / "spec").exists() and not (tmp_path / "m.json").exists()
    assert not (tmp_path / "oof.parquet").exists()


def test_the_val_split_chooses_the_trees_weight(trained):
    model, maps, labels = trained
    chosen = Specialist(type(model.config)(**model.config.__dict__), model.net, model.trees)
    scores = choose_blend(chosen, list(maps), labels)
    assert set(scores) == {str(w) for w in BLENDS}
    assert scores[str(chosen.config.blend)] == max(scores.values())
    truth = [set(v) for v in labels]
    got = stats.ci(stats.macro_f1_metric(truth, chosen.predict(list(maps))), len(truth), 10)["value"]
    assert got == pytest.approx(max(scores.values()), abs=1e-3)


def test_the_blend_weight_is_the_best_one_and_ties_go_to_the_nearest_half():
    """Truth is Loc on every map; the CNN always says Center. At weight w the blend gives Loc
    ``w * trees_Loc + (1 - w) * cnn_Loc``, so sure trees win from 0.5 on (three tied weights: 0.5 is
    kept) and barely-right trees only at 1.0."""
    names, labels = ["Center", "Loc"], [["Loc"]] * 4
    cnn = np.tile([0.9, 0.1], (4, 1))
    weight, scores = pick_blend(cnn, np.tile([0.0, 1.0], (4, 1)), labels, names, False)
    assert weight == 0.5
    assert scores == {"0.0": 0.0, "0.25": 0.0, "0.5": 1.0, "0.75": 1.0, "1.0": 1.0}
    weight, scores = pick_blend(
        np.tile([1.0, 0.0], (4, 1)), np.tile([0.45, 0.55], (4, 1)), labels, names, False
    )
    assert weight == 1.0
    assert [scores[str(w)] for w in BLENDS] == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_out_of_fold_probabilities_come_from_models_that_never_saw_the_map():
    """On random labels the trees memorise their training maps; out of fold they are at chance."""
    _, maps, _, _ = stage.wafer_maps(vqa_table(240, 64, seed=7), Path("train"))
    rng = np.random.default_rng(0)
    labels = [[c] for c in rng.choice(["Center", "Loc", "Scratch"], size=len(maps))]
    p = {**FAST, "epochs": 1}
    model, members = fit_out_of_fold(maps, labels, p, folds=3)
    cnn, trees = members["cnn"], members["trees"]
    assert set(members) == {"cnn", "trees"} and model.config.stack is None
    truth = np.array([model.config.classes.index(v[0]) for v in labels])
    in_sample = model.members(list(maps))[1]
    assert (in_sample.argmax(1) == truth).mean() > 0.9
    assert (trees.argmax(1) == truth).mean() < 0.5
    assert cnn.shape == trees.shape == (len(maps), 3)
    np.testing.assert_allclose(cnn.sum(1), 1.0, atol=1e-5)


def test_fold_models_train_for_fold_epochs_and_the_shipped_one_for_epochs(monkeypatch):
    from wafersage.modeling import specialist as module

    _, maps, _, _ = stage.wafer_maps(vqa_table(40, 64, seed=3), Path("train"))
    labels = [[c] for c in np.random.default_rng(1).choice(["Center", "Loc"], size=len(maps))]
    fits, real = [], module._fit_net
    monkeypatch.setattr(
        module, "_fit_net", lambda d, rows, p: fits.append((len(rows), p["epochs"])) or real(d, rows, p)
    )
    for fold_epochs, want in [(1, 1), (None, 2)]:
        fits.clear()
        fit_out_of_fold(maps, labels, {**FAST, "epochs": 2, "fold_epochs": fold_epochs}, folds=2)
        assert fits == [(len(maps), 2), (len(maps) // 2, want), (len(maps) // 2, want)]


def test_training_prompts_read_the_out_of_fold_clause_and_other_maps_the_specialist(trained):
    model, maps, _ = trained
    names = model.config.classes
    probs = np.zeros((2, len(names)))
    probs[:, names.index("Loc")] = 1.0
    table = oof_table(["w1", "w2"], list(maps[:2]), names, {"cnn": probs, "trees": probs})
    advisor = OutOfFold(model, table)
    got = advisor.clauses([maps[0], maps[5], maps[1]])
    assert got[0] == got[2] == clauses_of(probs[:1], names)[0] == "Specialist: Loc 100%."
    assert got[1] == model.clauses([maps[5]])[0]
    assert table["map_key"].tolist() == [map_key(maps[0]), map_key(maps[1])]
    four = np.zeros((1, len(names)))
    four[0, [names.index(c) for c in ("Loc", "Center", "Donut", "Scratch")]] = [0.9, 0.8, 0.7, 0.6]
    four_table = oof_table(["w1"], list(maps[:1]), names, {"cnn": four, "trees": four})
    multi = Specialist(type(model.config)(**{**model.config.__dict__, "multi_label": True}), model.net)
    assert OutOfFold(multi, four_table).clauses([maps[0]]) == [
        "Specialist: Loc 90%, Center 80%, Donut 70%, Scratch 60%."
    ]
    assert OutOfFold(model, four_table).clauses([maps[0]]) == ["Specialist: Loc 90%, Center 80%, Donut 70%."]


def test_features_come_from_the_die_level_map_the_image_carries(tmp_path):
    """The stage reads each wafer's die-level map out of its PNG; a specialist fitted on them
    measures its features there (saved with it), and one fitted without them ignores them."""
    raw = generate(
        SyntheticConfig.from_dict({"n_wafers": 120, "seed": 5, "noise_rate": 0.0, "mixed_fraction": 0.0})
    )
    table = vqa_table(120, 64, seed=5)
    _, maps, dies, labels = stage.wafer_maps(table, Path("train"))
    for die, row in zip(dies, raw.itertuples(), strict=True):
        np.testing.assert_array_equal(die, decode_map(row.map, row.rows, row.cols))
    assert any(d.shape != (64, 64) for d in dies)
    p = {**FAST, "epochs": 1}
    die_model = fit(maps, labels, p, dies)
    square_model = fit(maps, labels, p)
    assert die_model.config.die_features and not square_model.config.die_features
    with_dies = die_model.members(list(maps[:30]), dies[:30])
    assert not np.allclose(with_dies[0], die_model.members(list(maps[:30]))[0], atol=1e-4)
    np.testing.assert_array_equal(
        square_model.members(list(maps[:30]), dies[:30])[0], square_model.members(list(maps[:30]))[0]
    )
    die_model.save(tmp_path / "s")
    again = Specialist.load(tmp_path / "s")
    assert again.config.die_features
    np.testing.assert_array_equal(
        again.probabilities(list(maps[:30]), dies[:30]), die_model.probabilities(list(maps[:30]), dies[:30])
    )
    # trained on both sources, a bare picture (no die map) is read with the picture's own features
    both = fit(maps, labels, {**p, "picture_features": True}, dies)
    assert both.config.picture_features and not die_model.config.picture_features
    assert both.trees.n_features_in_ == die_model.trees.n_features_in_ + 1
    np.testing.assert_array_equal(
        both.members(list(maps[:30]), [None] * 30)[1], both.members(list(maps[:30]))[1]
    )
    _, held, held_dies, held_labels = stage.wafer_maps(vqa_table(100, 64, seed=6), Path("val"))

    def trees_accuracy(model: Specialist, given: list | None) -> float:
        probs = model.members(list(held), given)[1]
        names = model.config.classes
        return float(np.mean([names[i] in v for i, v in zip(probs.argmax(1), held_labels, strict=True)]))

    assert trees_accuracy(both, None) >= trees_accuracy(die_model, None) + 0.05
    assert trees_accuracy(both, held_dies) >= trees_accuracy(die_model, held_dies) - 0.02
    both.save(tmp_path / "both")
    np.testing.assert_array_equal(
        Specialist.load(tmp_path / "both").probabilities(list(held)), both.probabilities(list(held))
    )
    # a grounder reads the die map from the image: the same clause as the specialist given it
    from wafersage.modeling.vqa_data import pil_image

    images = [pil_image(v) for v in table.drop_duplicates("wafer_id")["image"][:10]]
    lines = Grounder(IMAGE_ATTRIBUTES, die_model).texts(images)
    for line, clause in zip(lines, die_model.clauses(list(maps[:10]), dies[:10]), strict=True):
        assert line.endswith(clause)


def _members(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truth for ``n`` maps of ``k`` classes, a CNN that guesses and trees that are right 90% of
    the time."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    cnn = rng.dirichlet(np.ones(k), n)
    right = np.where(rng.random(n) < 0.9, truth, rng.integers(0, k, n))
    trees = 0.3 * rng.dirichlet(np.ones(k), n) + 0.7 * np.eye(k)[right]
    return np.eye(k)[truth], cnn, trees


def test_the_stacker_learns_which_member_to_trust_and_saves_what_sklearn_predicts():
    from sklearn.linear_model import LogisticRegression

    names = ["Center", "Donut", "Loc", "Scratch"]
    y, cnn, trees = _members(600, 4, 0)
    stack, held = fit_stack(cnn, trees, y, names, False, 0)
    coef = np.abs(np.asarray(stack["coef"]))
    assert coef.shape == (4, 8) and coef[:, 4:].sum() > 5 * coef[:, :4].sum()
    truth = y.argmax(1)
    assert (held.argmax(1) == truth).mean() > 0.85 and (cnn.argmax(1) == truth).mean() < 0.4
    x = stack_inputs(cnn, trees, False)
    sk = LogisticRegression(C=stack["C"][0], max_iter=3000).fit(x, truth)
    np.testing.assert_allclose(stacked(stack, cnn, trees, False), sk.predict_proba(x), atol=1e-6)
    # two classes: sklearn keeps one decision function; the saved stacker gives both probabilities
    y2, cnn2, trees2 = _members(300, 2, 1)
    stack2, _ = fit_stack(cnn2, trees2, y2, names[:2], False, 0)
    sk2 = LogisticRegression(C=stack2["C"][0], max_iter=3000).fit(stack_inputs(cnn2, trees2, False), y2[:, 1])
    np.testing.assert_allclose(
        stacked(stack2, cnn2, trees2, False), sk2.predict_proba(stack_inputs(cnn2, trees2, False)), atol=1e-6
    )


def test_a_multi_label_stacker_is_one_regression_a_label():
    names = ["Center", "Donut", "Loc"]
    rng = np.random.default_rng(2)
    y = (rng.random((400, 3)) < 0.4).astype(float)
    y[:, 1] = 0.0
    y[:20, 1] = 1.0  # a rarer label
    trees = np.clip(0.8 * y + 0.2 * rng.random(y.shape), 0, 1)
    cnn = rng.random(y.shape)
    stack, held = fit_stack(cnn, trees, y, names, True, 0)
    assert len(stack["C"]) == 3 and np.shape(stack["coef"]) == (3, 6)
    probs = stacked(stack, cnn, trees, True)
    assert ((probs >= 0.5) == y).mean() > 0.97 and ((held >= 0.5) == y).mean() > 0.97
    # each label's regression reads mostly that label's trees column
    coef = np.abs(np.asarray(stack["coef"]))
    assert all(coef[c].argmax() == 3 + c for c in range(3))


@pytest.mark.parametrize("multi_label", [False, True])
def test_a_stack_temperature_grades_the_clause_and_keeps_every_decision(multi_label):
    names = ["Center", "Donut", "Loc", "Scratch"]
    y, cnn, trees = _members(600, 4, 4)
    sharp, held = fit_stack(cnn, trees, y, names, multi_label, 0)
    soft, held3 = fit_stack(cnn, trees, y, names, multi_label, 0, temperature=3.0)
    assert soft["temperature"] == 3.0 and soft["coef"] == sharp["coef"]
    p1, p3 = stacked(sharp, cnn, trees, multi_label), stacked(soft, cnn, trees, multi_label)
    for a, b in ((p1, p3), (held, held3)):
        np.testing.assert_array_equal(decide(a, names, multi_label), decide(b, names, multi_label))
        top1, top3 = a.max(1), b.max(1)
        assert np.median(top1) > 0.8 and np.median(top3) < np.median(top1) - 0.2
    if not multi_label:
        np.testing.assert_allclose(p3.sum(1), 1.0)
    # the saved temperature is what serving applies: the sharp stacker's logits divided by 3
    np.testing.assert_allclose(p3, tempered(p1, 3.0, multi_label), atol=1e-9)


def test_the_stacker_refuses_a_class_with_a_single_training_map():
    names = ["Center", "Donut", "Loc"]
    y, cnn, trees = _members(60, 3, 3)
    y[:] = np.eye(3)[np.r_[[1], np.zeros(29, int), np.full(30, 2)]]
    with pytest.raises(WaferSageError, match="needs two training maps of each class.*Donut: 1"):
        fit_stack(cnn, trees, y, names, False, 0)
    y[:, :] = 0.0
    y[:, 0] = 1.0
    with pytest.raises(WaferSageError, match="use combine: blend.*Center: 0"):
        fit_stack(cnn, trees, y, names, True, 0)


def test_a_stacked_stage_ships_its_stacker_and_training_prompts_read_the_cross_fitted_one(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    vqa = write_vqa(tmp_path / "vqa", n_wafers=120, size=64)
    oof = tmp_path / "oof.parquet"
    p = {"epochs": 1, "width": 4, "batch_size": 16, "combine": "stack"}
    m = stage.run(p, vqa, tmp_path / "spec", tmp_path / "spec.json", oof)
    assert m["combine"] == "stack" and "trees_weight" not in m and len(m["stack_C"]) == 1
    model = Specialist.load(tmp_path / "spec")
    assert model.config.stack["C"] == m["stack_C"] and model.trees is not None
    names = model.config.classes
    _, maps, dies, _ = stage.wafer_maps(pd.read_parquet(vqa / "val.parquet"), Path("val"))
    cnn, trees = model.members(list(maps), dies)
    np.testing.assert_allclose(
        model.probabilities(list(maps), dies), stacked(model.config.stack, cnn, trees, False)
    )
    table = pd.read_parquet(oof)
    held = table[[f"stack:{c}" for c in names]].to_numpy()
    x = (table[[f"cnn:{c}" for c in names]].to_numpy(), table[[f"trees:{c}" for c in names]].to_numpy())
    assert np.abs(held - stacked(model.config.stack, *x, False)).max() > 1e-3  # cross-fitted, not in-sample
    advisor = OutOfFold(model, table)
    assert list(advisor.known.values()) == clauses_of(held, names)
    for bad, why in [({"folds": 0}, "folds >= 2"), ({"trees": False}, "trees: true")]:
        with pytest.raises(WaferSageError, match=why):
            stage.run({**p, **bad}, vqa, tmp_path / "x", tmp_path / "x.json", tmp_path / "x.parquet")
    assert not (tmp_path / "x").exists()
