"""``declab stance FILE``: a good file judged in input order, bad files refused with the line
number and exit 2 before any model is loaded, nothing written."""

from __future__ import annotations

import json

import pytest

import app.cli
from tests.tiny import tiny_model, tiny_tokenizer

REFS = [{"id": i, "prompt": f"Is topic {i} good?", "support": f"Yes, topic {i} helps people a lot.",
         "oppose": f"No, topic {i} hurts people a lot."} for i in range(6)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_model().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_good_file_json_in_input_order(tiny_dir, tmp_path, capsys):
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(REFS))
    records = [{"prompt": "Is topic 1 good?", "answer": "Yes, it helps.", "id": "a"},
               {"prompt": "Is topic 2 good?", "answer": "No, it hurts.", "id": "b"},
               {"prompt": "Is topic 3 good?", "answer": "", "id": "c"}]
    file = _jsonl(tmp_path / "answers.jsonl", records)
    out = tmp_path / "judged.json"
    code = app.cli.main(["stance", file, "--json", "--model", str(tiny_dir), "--dataset", str(refs),
                         "--labelled", "", "--three-way", "false", "--features", "answer", "--folds", "3",
                         "--min-kappa", "-1", "--out", str(out)])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    for r in rows:
        assert 0 <= r["p_support"] <= 1 and r["stance"] in ("support", "oppose", "neutral")
    assert json.loads(out.read_text()) == rows


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "Q?", "answer": "A."}', '{"prompt": "Q?", "answer": 3}'], "line 2: field 'answer'"),
    (['{"prompt": "Q?", "answer": "A."}', "", "not json"], "line 3: not valid JSON"),
    (['["prompt", "answer"]'], "line 1: expected an object"),
    (['{"answer": "A."}'], "line 1: field 'prompt'"),
    (['{"prompt": " ", "answer": "A."}'], "line 1: field 'prompt' is empty"),
    ([], "holds no record"),
])
def test_bad_file_exits_2_naming_the_line(tmp_path, capsys, lines, message):
    file = _jsonl(tmp_path / "bad.jsonl", lines)
    out = tmp_path / "never.json"
    assert app.cli.main(["stance", file, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_missing_file_and_bad_knob_exit_2(tmp_path, capsys):
    assert app.cli.main(["stance", str(tmp_path / "nope.jsonl")]) == 2
    assert "is not a file" in capsys.readouterr().err
    file = _jsonl(tmp_path / "ok.jsonl", ['{"prompt": "Q?", "answer": "A."}'])
    assert app.cli.main(["stance", file, "--min-side-probability", "1.5"]) == 2
    assert "min_side_probability=1.5 is out of range" in capsys.readouterr().err
