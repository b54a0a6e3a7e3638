"""Preference data: read, validate and shape (prompt, chosen, rejected) pairs for DPO/ORPO.

Three on-disk formats are read, as a JSON list (``.json``) or one record per line (``.jsonl``):

- **course**: ``{"id", "prompt", "support", "oppose"}``, the stance schema of the NTU homework.
  Which side is *chosen* is decided by the ``support_ratio`` knob (see ``support_count``).
- **standard** (TRL): ``{"prompt", "chosen", "rejected"}`` with plain strings; ``id`` optional.
- **conversational** (TRL): the same keys holding lists of ``{"role", "content"}`` messages.

Every problem raises ``DatasetError`` naming the file, the record index (0-based, as in the JSON
list / line order) and the field. ``load_dataset`` also resolves the shipped datasets by name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from decoding.errors import DecodingLabError, check_range

DATASET_DIR = Path(__file__).parent / "datasets"
SHIPPED_DATASETS = {
    "stance": "stance_train.json",
    "stance-test": "stance_test.json",
    "anti-repetition": "anti_repetition.json",   # built by declab data anti-repetition
}
# Held out for evaluation, never trained on: the stance test prompts and the stance judge's
# labelled generations (alignment.stance). The lab does not offer them; TrainConfig refuses them.
HELD_OUT_DATASETS = {"stance-test": DATASET_DIR / "stance_test.json",
                     "stance-judge": DATASET_DIR / "stance_judge_set.jsonl"}
TRAINING_DATASETS = tuple(name for name in SHIPPED_DATASETS if name not in HELD_OUT_DATASETS)
CHAT_ROLES = ("system", "user", "assistant", "tool")


class DatasetError(DecodingLabError):
    """A preference file that cannot be read, or a record that breaks the schema."""


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation, as in TRL's conversational format."""

    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


Text = str | tuple[ChatMessage, ...]


@dataclass(frozen=True)
class PreferencePair:
    """One preference: for ``prompt``, ``chosen`` is preferred over ``rejected``.

    Plain-text pairs hold strings; conversational pairs hold tuples of ``ChatMessage`` in all
    three fields (the prompt turns, then the chosen / rejected assistant turns). ``meta`` keeps
    what is not training content (the course ``stance`` of the chosen side, extra record keys)
    and takes no part in equality, hashing or ``dataset_hash``.
    """

    id: int | str
    prompt: Text
    chosen: Text
    rejected: Text
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_conversational(self) -> bool:
        return not isinstance(self.prompt, str)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": _plain(self.prompt), "chosen": _plain(self.chosen),
                "rejected": _plain(self.rejected), "meta": dict(self.meta)}


@dataclass(frozen=True)
class StanceRecord:
    """A course-schema record: a question and one answer for each side."""

    id: int | str
    prompt: str
    support: str
    oppose: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "support": self.support, "oppose": self.oppose}


@dataclass(frozen=True)
class PreferenceDataset:
    """The pairs that will be trained on, with the knobs that selected them (a sequence)."""

    source: str
    format: str
    pairs: tuple[PreferencePair, ...]
    records_in_file: int
    data_size: int
    support_ratio: float | None
    support_count: int | None

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[PreferencePair]:
        return iter(self.pairs)

    def __getitem__(self, index: int) -> PreferencePair:
        return self.pairs[index]

    @property
    def sha256(self) -> str:
        return dataset_hash(self.pairs)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "records_in_file": self.records_in_file,
                "data_size": self.data_size, "support_ratio": self.support_ratio,
                "support_count": self.support_count, "sha256": self.sha256,
                "pairs": [p.to_dict() for p in self.pairs]}


# --------------------------------------------------------------------------- reading

def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The raw records of a ``.json`` (a list of objects) or ``.jsonl`` (one object a line) file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read preference file ({exc.__class__.__name__}: {exc})") from None
    if path.suffix == ".jsonl":
        records = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}: line {line_no}: malformed JSON ({exc.msg}, column {exc.colno})") from None
    elif path.suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: malformed JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
        if not isinstance(records, list):
            raise DatasetError(f"{path}: top level has type {type(records).__name__}; "
                               "expected a JSON list of records")
    else:
        raise DatasetError(f"{path}: unsupported extension {path.suffix!r}; allowed: .json, .jsonl")
    if not records:
        raise DatasetError(f"{path}: no records; expected at least 1")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: record {index}: has type {type(record).__name__}; expected a JSON object")
    return records


def detect_format(record: dict[str, Any]) -> str:
    """``course``, ``standard`` or ``conversational``, from the keys and value types of a record."""
    if "support" in record or "oppose" in record:
        return "course"
    if "chosen" in record or "rejected" in record:
        return "conversational" if isinstance(record.get("chosen"), list) else "standard"
    return "unknown"


def parse_records(records: Sequence[dict[str, Any]], source: str) -> tuple[str, list[Any]]:
    """Validate records of one format: ``StanceRecord``s for course files, else ``PreferencePair``s.

    Raises ``DatasetError`` (file, record index, field) for a missing key, an empty or
    non-string value, a malformed message, a duplicate id, identical chosen/rejected, or
    records of mixed formats.
    """
    fmt = detect_format(records[0])
    if fmt == "unknown":
        raise DatasetError(f"{source}: record 0: unknown format (keys {sorted(records[0])}); expected "
                           "'prompt' with 'support'/'oppose' (course) or 'chosen'/'rejected' (TRL)")
    parsed, seen = [], {}
    for index, record in enumerate(records):
        where = f"{source}: record {index}"
        if detect_format(record) != fmt:
            raise DatasetError(f"{where}: is {detect_format(record)} format but record 0 is {fmt}; "
                               "a file holds one format")
        ident = _record_id(record, index, where, required=(fmt == "course"))
        if ident in seen:
            raise DatasetError(f"{where}: field 'id': duplicate id {ident!r} (also record {seen[ident]})")
        seen[ident] = index
        if fmt == "course":
            prompt, support, oppose = (_text_field(record, key, where) for key in ("prompt", "support", "oppose"))
            if support == oppose:
                raise DatasetError(f"{where}: fields 'support'/'oppose': identical answers; a pair needs two")
            parsed.append(StanceRecord(ident, prompt, support, oppose))
            continue
        read = _text_field if fmt == "standard" else _messages_field
        prompt, chosen, rejected = (read(record, key, where) for key in ("prompt", "chosen", "rejected"))
        if chosen == rejected:
            raise DatasetError(f"{where}: fields 'chosen'/'rejected': identical; a pair needs two different answers")
        extra = {k: v for k, v in record.items() if k not in ("id", "prompt", "chosen", "rejected")}
        parsed.append(PreferencePair(ident, prompt, chosen, rejected, meta={"format": fmt, **extra}))
    return fmt, parsed


def _record_id(record: dict[str, Any], index: int, where: str, required: bool) -> int | str:
    if "id" not in record:
        if required:
            raise DatasetError(f"{where}: missing field 'id'")
        return index  # TRL formats need no id; the record index stands in
    ident = record["id"]
    if isinstance(ident, bool) or not isinstance(ident, int | str) or ident == "":
        raise DatasetError(f"{where}: field 'id': {ident!r} is not allowed; expected an int or a non-empty string")
    return ident


def _text_field(record: dict[str, Any], key: str, where: str) -> str:
    if key not in record:
        raise DatasetError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise DatasetError(f"{where}: field {key!r}: has type {type(value).__name__}; expected a string")
    if not value.strip():
        raise DatasetError(f"{where}: field {key!r}: empty string; expected non-empty text")
    return value


def _messages_field(record: dict[str, Any], key: str, where: str) -> tuple[ChatMessage, ...]:
    if key not in record:
        raise DatasetError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: field {key!r}: expected a non-empty list of {{'role', 'content'}} messages")
    messages = []
    for m_index, message in enumerate(value):
        at = f"{where}: field {key!r}[{m_index}]"
        if not isinstance(message, dict):
            raise DatasetError(f"{at}: has type {type(message).__name__}; expected a {{'role', 'content'}} object")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise DatasetError(f"{at}: role={role!r}; allowed: {', '.join(CHAT_ROLES)}")
        messages.append(ChatMessage(role, _text_field(message, "content", at)))
    return tuple(messages)


# --------------------------------------------------------------------------- course knobs

def support_count(data_size: int, support_ratio: float) -> int:
    """How many of the first ``data_size`` records prefer ``support``: ``int(data_size * support_ratio)``.

    This is the homework notebook's own line (``support_data_size = int(data_size *
    support_ratio)``), so a split here equals the course split: truncation, not rounding
    (10 × 0.25 → 2, 3 × 0.5 → 1; Python's ``round`` would give 2 for both, banker's rounding).
    It inherits the notebook's float artefacts: 50 × 0.58 = 28.999999999999996 → 28 and
    90 × 0.7 → 62; every one-decimal ratio with 1 <= data_size <= 89 is exact.
    """
    return int(data_size * support_ratio)


def check_knobs(data_size: int | None, support_ratio: float | None, records: int, source: str) -> tuple[int, float]:
    """Validated ``(data_size, support_ratio)``; ``None`` means all records / ratio 1 (all prefer support)."""
    if data_size is None:
        data_size = records
    check_range("data_size", data_size, 1, records, integer=True, error=DatasetError,
                allowed=f"1 <= data_size <= {records} (records in {source})")
    ratio = 1.0 if support_ratio is None else support_ratio
    check_range("support_ratio", ratio, 0, 1, error=DatasetError)
    return data_size, float(ratio)


def stance_pairs(records: Sequence[StanceRecord], support_ratio: float) -> list[PreferencePair]:
    """Course pairs: the first ``support_count(n, ratio)`` records prefer ``support``, the rest ``oppose``."""
    n_support = support_count(len(records), support_ratio)
    pairs = []
    for index, rec in enumerate(records):
        if index < n_support:
            pairs.append(PreferencePair(rec.id, rec.prompt, rec.support, rec.oppose, meta={"stance": "support"}))
        else:
            pairs.append(PreferencePair(rec.id, rec.prompt, rec.oppose, rec.support, meta={"stance": "oppose"}))
    return pairs


# --------------------------------------------------------------------------- registry

def held_out(name_or_path: str | Path) -> str | None:
    """The held-out set ``name_or_path`` names or points to (by name or by file), else None."""
    if str(name_or_path) in HELD_OUT_DATASETS:
        return str(name_or_path)
    try:
        path = Path(name_or_path).resolve()
    except (OSError, ValueError):
        return None
    return next((name for name, file in HELD_OUT_DATASETS.items() if file.resolve() == path), None)


def resolve_path(name_or_path: str | Path) -> Path:
    """A shipped dataset name (``stance``, ``stance-test``) or a file path."""
    if str(name_or_path) in SHIPPED_DATASETS:
        return DATASET_DIR / SHIPPED_DATASETS[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        raise DatasetError(f"dataset={str(name_or_path)!r} is neither a shipped dataset "
                           f"({', '.join(SHIPPED_DATASETS)}) nor an existing file")
    return path


def load_stance_records(name_or_path: str | Path) -> list[StanceRecord]:
    """The course-schema records of a shipped name or file (e.g. test prompts with both references)."""
    path = resolve_path(name_or_path)
    fmt, parsed = parse_records(read_records(path), str(path))
    if fmt != "course":
        raise DatasetError(f"{path}: is {fmt} format; expected the course schema {{id, prompt, support, oppose}}")
    return parsed


def load_dataset(name_or_path: str | Path, data_size: int | None = None,
                 support_ratio: float | None = None) -> PreferenceDataset:
    """Load preference pairs: the first ``data_size`` records; for course files, ``support_ratio``
    decides the chosen side (default 1.0: every pair prefers ``support``)."""
    path = resolve_path(name_or_path)
    fmt, parsed = parse_records(read_records(path), str(path))
    if fmt != "course" and support_ratio is not None:
        raise DatasetError(f"support_ratio={support_ratio!r} applies only to course-schema files; "
                           f"{path} is {fmt} format (its chosen side is fixed)")
    size, ratio = check_knobs(data_size, support_ratio, len(parsed), str(path))
    selected = parsed[:size]
    if fmt == "course":
        pairs = stance_pairs(selected, ratio)
        return PreferenceDataset(str(path), fmt, tuple(pairs), len(parsed), size, ratio, support_count(size, ratio))
    return PreferenceDataset(str(path), fmt, tuple(selected), len(parsed), size, None, None)


# --------------------------------------------------------------------------- TRL rows

def to_trl_rows(pairs: Sequence[PreferencePair]) -> list[dict[str, Any]]:
    """Rows for ``datasets.Dataset.from_list`` in TRL's standard format (strings) or its
    conversational format (lists of ``{"role", "content"}``), as the pairs are.

    TRL's ``DPOTrainer`` appends the tokenizer's EOS to standard-format completions that do not
    end with it (``dpo_trainer.py`` ``add_eos``); conversational rows get the chat template instead.
    """
    kinds = {p.is_conversational for p in pairs}
    if len(kinds) > 1:
        raise DatasetError("pairs mix plain-text and conversational records; TRL needs one format per dataset")
    return [{"prompt": _plain(p.prompt), "chosen": _plain(p.chosen), "rejected": _plain(p.rejected)} for p in pairs]


def to_chat_rows(pairs: Sequence[PreferencePair], tokenizer: Any,
                 system_prompt: str | None = None) -> list[dict[str, str]]:
    """Standard-format rows rendered with ``tokenizer``'s chat template.

    ``prompt`` is the template applied to the prompt turns with ``add_generation_prompt=True``;
    each completion is the rest of the template applied to prompt + assistant turn, i.e. the
    assistant text followed by the template's end-of-turn (``"…<|im_end|>"`` for SmolLM2),
    with the whitespace the template puts *between* turns dropped. Why: TRL treats these rows as
    plain text and appends EOS unless the completion already ends with it; for ChatML models EOS
    is ``<|im_end|>`` itself, so the completion ends exactly where the template closes the
    assistant turn, and a model trained on it learns to stop there. A template that does not
    close the turn gets the tokenizer's EOS appended here. ``system_prompt`` is prepended unless
    the prompt already starts with a system turn (SmolLM2's template adds its own default).
    """
    rows = []
    for pair in pairs:
        prompt = _as_messages(pair.prompt, "user")
        if system_prompt is not None and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": system_prompt}] + prompt
        rendered_prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        row = {"prompt": rendered_prompt}
        for key in ("chosen", "rejected"):
            turns = _as_messages(getattr(pair, key), "assistant")
            full = tokenizer.apply_chat_template(prompt + turns, tokenize=False)
            if not full.startswith(rendered_prompt):
                raise DatasetError(f"pair id={pair.id!r}: field {key!r}: the chat template renders the prompt "
                                   "differently with and without a reply; cannot split prompt from completion")
            completion = full[len(rendered_prompt):].rstrip()
            if completion.endswith(turns[-1]["content"].rstrip()) and tokenizer.eos_token:
                completion += tokenizer.eos_token  # the template left the assistant turn open
            row[key] = completion
        rows.append(row)
    return rows


def dataset_hash(pairs: Sequence[PreferencePair]) -> str:
    """sha256 of the canonical JSON of ``[{id, prompt, chosen, rejected}, …]`` (sorted keys,
    no spaces, UTF-8): equal pairs in equal order give equal hashes; ``meta`` is excluded."""
    canonical = [{"id": p.id, "prompt": _plain(p.prompt), "chosen": _plain(p.chosen),
                  "rejected": _plain(p.rejected)} for p in pairs]
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plain(value: Text) -> str | list[dict[str, str]]:
    return value if isinstance(value, str) else [m.to_dict() for m in value]


def _as_messages(value: Text, role: str) -> list[dict[str, str]]:
    return [{"role": role, "content": value}] if isinstance(value, str) else [m.to_dict() for m in value]
