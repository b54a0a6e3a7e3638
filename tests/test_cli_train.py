"""``declab train``: bad input is one line on stderr and exit code 2; a tiny run end to end."""

from __future__ import annotations

import json

import pytest

import alignment.train as train_mod
import app.cli
from decoding.models import ADAPTER_META
from tests.tiny import tiny_lm

RECORDS = [{"id": i, "prompt": f"Is topic {i} good?", "support": f"Yes, topic {i} helps.",
            "oppose": f"No, topic {i} hurts."} for i in range(4)]


@pytest.fixture
def declab(monkeypatch, capsys):
    """Run ``declab`` with the train command registered; returns (exit code, stdout, stderr).
    Loading a base model is forbidden unless a test allows it."""
    monkeypatch.setattr(app.cli, "COMMAND_MODULES", ["app.cli_train"])
    monkeypatch.setattr(train_mod, "load_model", lambda *a, **k: pytest.fail("loaded a model"))

    def run(*argv: str):
        code = app.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(RECORDS))
    return path


def assert_user_error(result, *fragments: str) -> None:
    code, out, err = result
    assert code == 2 and out == ""
    assert err.startswith("declab: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("flags, fragments", [
    (["--method", "ppo"], ["method='ppo' is out of range", "dpo, ipo, orpo, simpo"]),
    (["--beta", "0"], ["beta=0.0 is out of range", "beta > 0"]),
    (["--beta", "-0.5"], ["beta=-0.5"]),
    (["--epochs", "0"], ["epochs=0 is out of range"]),
    (["--lr", "0"], ["learning_rate=0.0"]),
    (["--support-ratio", "2"], ["support_ratio=2.0"]),
    (["--load-in-4bit", "true", "--device", "cpu"], ["load_in_4bit=True", "CUDA"]),
    (["--report-to", "mlflow"], ["report_to='mlflow'"]),
])
def test_bad_knobs_exit_2(declab, tmp_path, flags, fragments):
    assert_user_error(declab("train", "--out", str(tmp_path / "a"), *flags), *fragments)
    assert not (tmp_path / "a").exists()


def test_existing_out_dir_exit_2(declab, tmp_path):
    (tmp_path / "a").mkdir()
    assert_user_error(declab("train", "--out", str(tmp_path / "a")), "already exists", "--overwrite")


def test_four_bit_without_gpu_exit_2(declab, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_user_error(declab("train", "--out", str(tmp_path / "a"), "--load-in-4bit", "true"),
                      "load_in_4bit=True", "CUDA")


def test_malformed_dataset_exit_2(declab, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 1, "prompt": "x", "support": "y"}')
    assert_user_error(declab("train", "--dataset", str(bad), "--out", str(tmp_path / "a")),
                      "bad.json", "malformed JSON")
    assert_user_error(declab("train", "--dataset", "no-such-set", "--out", str(tmp_path / "a")),
                      "dataset='no-such-set'")


def test_unparsable_number_is_an_argparse_error(declab, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        declab("train", "--out", str(tmp_path / "a"), "--epochs", "three")
    assert exit_info.value.code == 2
    assert "--epochs: invalid int value: 'three'" in capsys.readouterr().err


def test_help_lists_every_knob(declab, capsys):
    with pytest.raises(SystemExit) as exit_info:
        declab("train", "--help")
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--method", "--learning-rate", "--lr", "--precompute-ref", "--target-modules",
                 "--simpo-gamma", "--load-in-4bit", "--threads", "--model", "--overwrite"):
        assert flag in text, flag
    assert "odds-ratio" in text  # the help text comes from TrainConfig's field metadata


def test_tiny_run_end_to_end(declab, monkeypatch, tmp_path, data):
    loaded = []
    monkeypatch.setattr(train_mod, "load_model", lambda name=None, **kw: loaded.append(name) or tiny_lm())
    out = tmp_path / "adapters" / "tiny"
    code, stdout, err = declab("train", "--method", "orpo", "--dataset", str(data), "--support-ratio", "0.5",
                               "--data-size", "4", "--epochs", "1", "--batch-size", "2", "--beta", "0.2",
                               "--lr", "0.01", "--max-length", "64", "--threads", "1",
                               "--target-modules", "q_proj,v_proj", "--model", "my/base",
                               "--out", str(out), "--quiet")
    assert code == 0, err
    assert loaded == ["my/base"]
    meta = json.loads((out / ADAPTER_META).read_text())
    assert meta["config"]["learning_rate"] == 0.01 and meta["config"]["beta"] == 0.2
    assert meta["config"]["target_modules"] == ["q_proj", "v_proj"]
    assert meta["dataset"]["support_count"] == 2 and meta["steps"] == 2
    assert f"adapter written to {out}" in stdout and "ORPO on tiny-llama-0: 4 pairs" in stdout
    assert "--adapter " + str(out) in stdout
