"""The reader audit: the judge against readers on a study's own answers."""

import json

import pytest

from experiments import reader_audit as ra


def _row(prompt, model, label, judge, decoding="greedy"):
    return {"prompt_id": prompt, "model": model, "decoding": decoding, "label": label, "judge": judge}


def test_audit_counts_readers_and_judge_separately():
    rows = [_row("t1", "ratio1", "support", "support"), _row("t2", "ratio1", "neutral", "support"),
            _row("t1", "ratio0", "oppose", "oppose"), _row("t2", "ratio0", "oppose", "neutral")]
    out = ra.audit(rows, pairs=(("ratio1", "ratio0"),))
    assert out["n"] == 4 and out["agreement"]["accuracy"] == 0.5
    cells = {c["model"]: c for c in out["cells"]}
    assert cells["ratio1"]["readers_support"]["estimate"] == 0.5 and cells["ratio1"]["judge_support"]["estimate"] == 1.0
    assert cells["ratio0"]["readers_oppose"]["estimate"] == 1.0 and cells["ratio0"]["judge_oppose"]["estimate"] == 0.5
    support = next(d for d in out["differences"] if d["stance"] == "support")
    assert support["estimate"] == 0.5 and support["low"] <= 0.5 <= support["high"]


def test_a_bad_audit_line_is_refused_with_its_number(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(_row("t1", "base", "support", "support")) + "\n"
                    + json.dumps(_row("t1", "base", "maybe", "support")) + "\n")
    with pytest.raises(ValueError, match=r"line 2: label='maybe'"):
        ra.load_audit(path)
    with pytest.raises(SystemExit) as e:
        ra.main([str(path)])
    assert e.value.code == 2 and "line 2" in capsys.readouterr().err


def test_shipped_hw6_audit_covers_one_full_run():
    rows = ra.load_audit("alignment/datasets/stance_hw6_audit.jsonl")
    assert len(rows) == 280 and {r["prompt_id"] for r in rows} == {f"t{i:02d}" for i in range(1, 15)}
    assert {r["model"] for r in rows} == {"base", "ratio1", "ratio0", "epochs1", "pairs10"}
    out = ra.audit(rows)
    # measured (README, hw6): the readers back ratio 1 vs ratio 0 under both decodings
    found = [d for d in out["differences"] if (d["first"], d["second"], d["stance"]) == ("ratio1", "ratio0", "support")]
    assert len(found) == 2 and all(d["low"] > 0 for d in found)


def test_audit_sentence_names_what_the_readers_back(tmp_path):
    assert ra.audit_sentence(tmp_path / "absent.jsonl") == ""
    line = ra.audit_sentence()
    assert "κ 0.43" in line and "ratio1 vs ratio0" in line and "ratio1 vs epochs1" not in line
