"""``declab prefmath``: JSON values, readable tables, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import math

import pytest

import app.cli


@pytest.fixture
def declab(monkeypatch, capsys):
    """Run ``declab`` with the prefmath commands registered; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(app.cli, "COMMAND_MODULES", ["app.cli_prefmath"])

    def run(*argv: str):
        code = app.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def run_json(declab, *argv):
    code, out, err = declab(*argv, "--json")
    assert code == 0 and err == ""
    return json.loads(out)


def test_bt_json(declab):
    result = run_json(declab, "prefmath", "bt", "--ratings", "1,1,2")
    assert result["matrix"][2][0] == pytest.approx(2 / 3)
    assert result["most_preferred"] == [2] and result["form"] == "strength"


def test_bt_logistic_table(declab):
    code, out, _ = declab("prefmath", "bt", "--ratings", "1,1,2", "--form", "logistic")
    assert code == 0
    assert "sigmoid(r_i - r_j)" in out and "0.7311" in out and "most preferred: y3" in out


def test_maxmin_exercise(declab):
    result = run_json(declab, "prefmath", "maxmin", "--ratings", "1,1,2;2,1,2;3,1,0;0,2,3")
    assert result["chosen"] == [1] and result["value"] == 1 and result["worst_case"] == [0, 1, 0]
    code, out, _ = declab("prefmath", "maxmin", "--ratings", "1,1,2;2,1,2;3,1,0;0,2,3")
    assert "MaxMin choice: y2" in out and "<- chosen" in out


def test_rm_json(declab):
    result = run_json(declab, "prefmath", "rm", "--r-chosen", "0.5", "--r-rejected", "0.8")
    assert result["loss"] == pytest.approx(math.log1p(math.exp(0.3)))
    assert result["margin"] == pytest.approx(-0.3)


DPO_ARGS = ("prefmath", "dpo", "--pi-chosen", "0.2", "--pi-rejected", "0.3",
            "--ref-chosen", "0.2", "--ref-rejected", "0.4", "--beta", "2")


def test_dpo_json_exercise(declab):
    result = run_json(declab, *DPO_ARGS)
    assert result["chosen_reward"] == 0.0
    assert result["rejected_reward"] == pytest.approx(2 * math.log(0.75))
    assert result["loss"] == pytest.approx(math.log(25 / 16))


def test_dpo_beta_sweep(declab):
    result = run_json(declab, *DPO_ARGS, "--beta-sweep", "0.1,0.5,1,2,5")
    assert [row["beta"] for row in result["beta_sweep"]] == [0.1, 0.5, 1, 2, 5]
    assert result["beta_sweep"][3]["loss"] == pytest.approx(result["loss"])
    code, out, _ = declab(*DPO_ARGS, "--beta-sweep", "0.1,5")
    assert code == 0 and "beta log(0.3/0.4)" in out and "0.446287" in out and "0.2129" in out


def test_dpo_log_probs(declab):
    args = ["prefmath", "dpo", "--log-probs", "--beta", "2"]
    for flag, p in (("--pi-chosen", 0.2), ("--pi-rejected", 0.3), ("--ref-chosen", 0.2), ("--ref-rejected", 0.4)):
        args += [flag, repr(math.log(p))]
    assert run_json(declab, *args)["loss"] == pytest.approx(math.log(25 / 16))


def test_ipo_json_length_averaged(declab):
    result = run_json(declab, "prefmath", "ipo", "--log-probs", "--pi-chosen", "-10", "--pi-rejected", "-30",
                      "--ref-chosen", "-12", "--ref-rejected", "-27", "--tau", "0.25",
                      "--chosen-length", "4", "--rejected-length", "6")
    assert result["h"] == pytest.approx(1.0) and result["loss"] == pytest.approx(1.0)


def test_orpo_json(declab):
    result = run_json(declab, "prefmath", "orpo", "--chosen-logp", repr(math.log(0.5)),
                      "--rejected-logp", repr(math.log(0.2)), "--lam", "0.5")
    assert result["or_loss"] == pytest.approx(math.log(1.25))
    assert result["loss"] == pytest.approx(math.log(2) + 0.5 * math.log(1.25))


@pytest.mark.parametrize("argv, fragment", [
    (("bt", "--ratings", "1,x"), "--ratings='1,x': item 'x' is not a finite number"),
    (("bt", "--ratings", "1,2", "--form", "softmax"), "form='softmax'"),
    (("bt", "--ratings", "1,-2"), "ratings[1]=-2.0 is out of range"),
    (("maxmin", "--ratings", "1,2;3"), "group_ratings[1] has 1 ratings"),
    (("rm", "--r-chosen", "nan", "--r-rejected", "0"), "--r-chosen='nan' is out of range"),
    (DPO_ARGS[1:-2] + ("--beta", "0"), "beta=0.0 is out of range; allowed: beta > 0"),
    (("dpo", "--pi-chosen", "1.2", "--pi-rejected", "0.3", "--ref-chosen", "0.2", "--ref-rejected", "0.4"),
     "pi_chosen=1.2 is out of range; allowed: 0 < pi_chosen <= 1"),
    (DPO_ARGS[1:] + ("--beta-sweep", "0.1,,1"), "--beta-sweep='0.1,,1'"),
    (("ipo", "--pi-chosen", "0.2", "--pi-rejected", "0.3", "--ref-chosen", "0.2", "--ref-rejected", "0.4",
      "--chosen-length", "two"), "--chosen-length='two' is not an integer"),
    (("orpo", "--chosen-logp", "0", "--rejected-logp", "-1"), "chosen_logp=0.0 is out of range"),
])
def test_bad_input_exits_2_with_one_line(declab, argv, fragment):
    code, out, err = declab("prefmath", *argv)
    assert code == 2 and out == ""
    assert err.startswith("declab: error: ") and fragment in err
    assert "Traceback" not in err and err.count("\n") == 1
