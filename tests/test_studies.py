"""The alignment studies end to end: prefmath (pure), and hw6 / decoding-vs-alignment /
dpo-vs-orpo in their --quick form on the tiny model (the stance judge's accuracy gate
lowered: a random tiny model cannot tell stances apart); hw6 --quick on the embedded model."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import app.cli
from app.cli_experiment import STUDIES
from alignment.stance import StanceConfig
from decoding.errors import DecodingLabError
from experiments import decoding_vs_alignment, dpo_vs_orpo, hw6
from experiments.runs import run_status
from tests.tiny import tiny_lm

LOOSE = StanceConfig(min_kappa=-1.0)
# the --quick shapes, smaller still: the tiny model only has to exercise the plumbing
TINY_HW6 = hw6.Hw6Settings(pairs=4, few_pairs=2, epochs=1, few_epochs=1, test_prompts=2, samples=1,
                           max_new_tokens=12, quick=True)


def _only_run(root: Path, name: str) -> Path:
    runs = sorted((root / name).iterdir())
    assert len(runs) == 1
    return runs[0]


def test_prefmath_study_writes_the_exercise_answers(tmp_path):
    assert app.cli.main(["experiment", "prefmath", "--root", str(tmp_path)]) == 0
    run = _only_run(tmp_path, "prefmath")
    assert run_status(run) == "complete"
    result = json.loads((run / "results.json").read_text())
    assert result["reward_model"]["loss"] == pytest.approx(-math.log(1 / (1 + math.exp(0.3))))
    assert result["dpo"]["loss"] == pytest.approx(-math.log(1 / (1 + math.exp(-2 * math.log(4 / 3)))))
    assert result["maxmin"]["chosen"] == [1]
    strength = result["bradley_terry"]["strength"]
    assert strength[0]["matrix"][0][2] == pytest.approx(1 / 3)
    report = (run / "report.md").read_text()
    assert "**0.4463**" in report and (run / "beta_sweep.png").stat().st_size > 10_000
    rows = list(csv.DictReader((run / "summary.csv").open()))
    assert len(rows) == 8


def test_variance_split():
    table = np.array([[0.1, 0.9], [0.1, 0.9]])          # only the decoding matters
    assert decoding_vs_alignment.variance_split(table) == pytest.approx(
        {"adapter": 0.0, "decoding": 1.0, "interaction": 0.0})
    table = np.array([[0.2, 0.2], [0.8, 0.8]])          # only the adapter matters
    assert decoding_vs_alignment.variance_split(table)["adapter"] == pytest.approx(1.0)
    assert sum(decoding_vs_alignment.variance_split(np.array([[0.1, 0.5], [0.7, 0.2]])).values()) == pytest.approx(1)


def test_hw6_quick_on_the_tiny_model(tmp_path):
    path = Path(hw6.run_hw6(replace(TINY_HW6, precision="fp32"), str(tmp_path), base=tiny_lm(), stance_config=LOOSE))
    assert run_status(path) == "complete"
    rows = list(csv.DictReader((path / "summary.csv").open()))
    assert {r["model"] for r in rows} == {"base", "ratio1", "ratio0"}
    assert {r["decoding"] for r in rows} == {"greedy", "sample:top_p=0.9"}
    for name in ("report.md", "results.jsonl", "stance.png", "curves_ratio0.png", "curves_ratio1.png"):
        assert (path / name).is_file(), name
    assert (path / "adapters" / "ratio0" / "adapter_meta.json").is_file()
    assert "(a) support_ratio 0 vs 1" in (path / "report.md").read_text()
    assert "Training arithmetic: float32." in (path / "report.md").read_text()   # --precision fp32
    meta = json.loads((path / "adapters" / "ratio0" / "adapter_meta.json").read_text())
    assert meta["precision"] == "fp32"


def test_hw6_refuses_an_unknown_precision_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(hw6, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    assert app.cli.main(["experiment", "hw6", "--precision", "fp16", "--root", str(tmp_path)]) == 2
    assert "precision='fp16' is out of range; allowed: auto, bf16, fp32" in capsys.readouterr().err


def test_decoding_vs_alignment_quick_on_the_tiny_model(tmp_path):
    settings = decoding_vs_alignment.GridSettings.quick_settings()
    settings = replace(settings, pairs=4, test_prompts=2, max_new_tokens=12)
    path = Path(decoding_vs_alignment.run_grid(settings, str(tmp_path), base=tiny_lm(), stance_config=LOOSE))
    grid = json.loads((path / "grid.json").read_text())
    assert grid["models"] == ["base", "dpo-b0.1"] and len(grid["decodings"]) == 2
    assert np.array(grid["support"]).shape == (2, 2)
    assert grid["per_step_shift"]["steps"] and all(s["kl"] >= -1e-6 for s in grid["per_step_shift"]["steps"])
    assert "is explained by the adapter" in (path / "report.md").read_text()
    assert "Training arithmetic: " in (path / "report.md").read_text()   # bf16 autocast or float32, said
    assert (path / "heatmaps.png").is_file() and (path / "per_step_kl.png").is_file()


def test_dpo_vs_orpo_quick_on_the_tiny_model(tmp_path):
    quick = dpo_vs_orpo.DpoOrpoSettings.quick_settings()
    settings = replace(quick, train_pairs=4, test_prompts=2, max_new_tokens=12)
    path = Path(dpo_vs_orpo.run_dpo_vs_orpo(settings, str(tmp_path), base=tiny_lm(), stance_config=LOOSE))
    rows = list(csv.DictReader((path / "summary.csv").open()))
    assert [r["model"] for r in rows] == ["base", "dpo-antirep", "orpo-antirep"]
    train = json.loads((path / "data" / "anti_repetition_train.json").read_text())
    assert train and all(r["meta"]["source"] != "template_loop" for r in train)
    assert "Beside the seed report" in (path / "report.md").read_text()
    assert "Training arithmetic: " in (path / "report.md").read_text()   # bf16 autocast or float32, said


def test_interrupted_study_stays_incomplete(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hw6.kit, "train_into_run", boom)
    with pytest.raises(KeyboardInterrupt):
        hw6.run_hw6(TINY_HW6, str(tmp_path), base=tiny_lm(), stance_config=LOOSE)
    run = _only_run(tmp_path, "hw6")
    assert run_status(run) == "incomplete" and not (run / "report.md").exists()


def test_unknown_study_exits_2(capsys):
    assert app.cli.main(["experiment", "nope"]) == 2
    assert "unknown study 'nope'" in capsys.readouterr().err


@pytest.mark.embedded
def test_hw6_quick_on_the_embedded_model(tmp_path, embedded):
    """The real thing, small: two DPO adapters (ratio 0 and 1) on 12 stance pairs, 4 test
    prompts. The held-out preference accuracy is measured towards each adapter's own side."""
    path = Path(hw6.run_hw6(hw6.Hw6Settings.quick_settings(), str(tmp_path), base=embedded))
    assert run_status(path) == "complete"
    judge = json.loads((path / "judge.json").read_text())
    assert judge["kappa"] >= judge["min_kappa"] and "generated answers" in judge["validated_on"]
    rows = list(csv.DictReader((path / "summary.csv").open()))
    assert all(0 <= float(r["support"]) <= 1 for r in rows)


def test_bad_study_options_exit_2_before_any_work(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(hw6, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    assert app.cli.main(["experiment", "hw6", "--samples", "0", "--root", str(tmp_path)]) == 2
    assert "samples=0 is out of range; allowed: an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:                    # argparse: not an integer
        app.cli.main(["experiment", "hw6", "--samples", "x", "--root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert not (tmp_path / "hw6").exists()


@pytest.mark.parametrize("changes, message", [
    ({"support_ratio": 1.5}, "support_ratio=1.5 is out of range; allowed: 0 <= support_ratio <= 1"),
    ({"learning_rate": 0.0}, "learning_rate=0.0 is out of range; allowed: 0 < learning_rate < 1"),
    ({"learning_rate": 1.0}, "learning_rate=1.0 is out of range; allowed: 0 < learning_rate < 1"),
])
def test_grid_settings_refuse_bad_training_knobs(changes, message):
    with pytest.raises(DecodingLabError, match=re.escape(message)):
        decoding_vs_alignment.GridSettings(**changes)
    assert "*oppose*" == decoding_vs_alignment.GridSettings(support_ratio=0).direction


def test_grid_cli_refuses_a_bad_ratio(tmp_path, capsys):
    code = app.cli.main(["experiment", "decoding-vs-alignment", "--support-ratio", "2",
                         "--root", str(tmp_path)])
    assert code == 2 and "support_ratio=2.0 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "decoding-vs-alignment").exists()


@pytest.mark.parametrize("cls, field", [(hw6.Hw6Settings, "pairs"), (dpo_vs_orpo.DpoOrpoSettings, "samples"),
                                        (decoding_vs_alignment.GridSettings, "max_new_tokens")])
def test_study_settings_refuse_non_positive_counts(cls, field):
    with pytest.raises(DecodingLabError, match=f"{field}=0 is out of range"):
        cls(**{field: 0})


STUDY_MODULES = {"hw6": hw6, "dpo-vs-orpo": dpo_vs_orpo, "decoding-vs-alignment": decoding_vs_alignment}


@pytest.mark.parametrize("lr", ["0", "1", "1.0", "2"])
@pytest.mark.parametrize("study", list(STUDY_MODULES))
def test_training_flags_are_validated_before_any_work(study, lr, tmp_path, capsys, monkeypatch):
    """TrainConfig refuses a learning rate of 1; so does every study, before it loads a model,
    fits the stance judge or trains anything (it used to accept 1.0 and fail after fitting)."""
    module = STUDY_MODULES[study]
    monkeypatch.setattr(module, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    monkeypatch.setattr(module, "fit_stance_judge", lambda *a, **k: pytest.fail("fitted the judge"))
    code = app.cli.main(["experiment", study, "--lr", lr, "--root", str(tmp_path)])
    expected = f"learning_rate={float(lr)!r} is out of range; allowed: 0 < learning_rate < 1"
    assert code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / study).exists()


@pytest.mark.parametrize("cls", [hw6.Hw6Settings, dpo_vs_orpo.DpoOrpoSettings, decoding_vs_alignment.GridSettings])
def test_study_settings_refuse_what_train_config_refuses(cls):
    from alignment.train import TrainConfig

    for rate in (1.0, 0.0, -1e-3, float("nan"), True):
        with pytest.raises(DecodingLabError) as study_error:
            cls(learning_rate=rate)
        with pytest.raises(DecodingLabError) as train_error:
            TrainConfig(learning_rate=rate)
        assert str(study_error.value) == str(train_error.value)
    assert cls(learning_rate=0.5).learning_rate == 0.5 and TrainConfig(learning_rate=0.5)


@pytest.mark.parametrize("study, cls, flag, field", [
    ("hw6", hw6.Hw6Settings, "--lr", "learning_rate"), ("hw6", hw6.Hw6Settings, "--samples", "samples"),
    ("dpo-vs-orpo", dpo_vs_orpo.DpoOrpoSettings, "--support-ratio", "support_ratio"),
    ("decoding-vs-alignment", decoding_vs_alignment.GridSettings, "--lr", "learning_rate")])
def test_study_flags_take_their_help_from_the_settings(study, cls, flag, field, capsys):
    import dataclasses

    with pytest.raises(SystemExit):
        app.cli.main(["experiment", study, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    help_text = next(f for f in dataclasses.fields(cls) if f.name == field).metadata["help"]
    assert len(help_text) > 20 and flag in text and " ".join(help_text.split()) in text


def test_dpo_vs_orpo_takes_the_training_direction_and_rate():
    settings = dpo_vs_orpo.DpoOrpoSettings(support_ratio=0, learning_rate=1e-3)
    assert (settings.support_ratio, settings.learning_rate) == (0, 1e-3)
    with pytest.raises(DecodingLabError, match=re.escape("support_ratio=-0.5 is out of range")):
        dpo_vs_orpo.DpoOrpoSettings(support_ratio=-0.5)


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_has_the_quick_mode_the_studies_page_starts(name, capsys):
    """The lab's Studies page runs ``declab experiment NAME --quick`` for every study it lists."""
    with pytest.raises(SystemExit) as exit_info:
        app.cli.main(["experiment", name, "--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out
