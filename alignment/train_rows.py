"""TRL rows from preference pairs, and their token counts as the trainer will see them.

``preference_rows`` renders the pairs as the trainer's ``prompt`` / ``chosen`` / ``rejected``
columns; ``sequence_lengths`` counts the tokens of each prompt and prompt + answer, so that
``check_lengths`` can refuse a cap that would make TRL drop rows silently.
"""

from __future__ import annotations

from typing import Any, Sequence

from decoding.errors import DecodingLabError, out_of_range

from .data import PreferenceDataset, to_chat_rows, to_trl_rows


def preference_rows(dataset: PreferenceDataset, tokenizer: Any, chat: bool) -> list[dict[str, Any]]:
    """TRL rows for the pairs: chat-template strings (``to_chat_rows``) or raw text / messages.

    In raw mode a plain-text prompt and completion are joined by one space when neither has
    whitespace at the join, so the completion starts on a token boundary (TRL warns otherwise,
    ``trainer/dpo_trainer.py:1111``) and "…manga?Yes" does not become one run-on word.
    """
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise DecodingLabError("chat=True but the model's tokenizer has no chat template; "
                                   "allowed here: chat=False (CLI: --chat false)")
        return to_chat_rows(dataset.pairs, tokenizer)
    rows = to_trl_rows(dataset.pairs)
    for row in rows:
        if isinstance(row["prompt"], str) and not row["prompt"][-1:].isspace():
            for key in ("chosen", "rejected"):
                if not row[key][:1].isspace():
                    row[key] = " " + row[key]
    return rows


def _token_count(tokenizer: Any, prompt: Any, completion: Any = None) -> int:
    if isinstance(prompt, str):
        text = prompt + (completion or "")
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    messages = list(prompt) + list(completion or [])
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=completion is None)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def sequence_lengths(rows: Sequence[dict[str, Any]], tokenizer: Any) -> list[tuple[int, int, int]]:
    """``(prompt, prompt + chosen, prompt + rejected)`` token counts per row, as the trainer sees them."""
    return [(_token_count(tokenizer, r["prompt"]), _token_count(tokenizer, r["prompt"], r["chosen"]),
             _token_count(tokenizer, r["prompt"], r["rejected"])) for r in rows]


def check_lengths(lengths: Sequence[tuple[int, int, int]], max_length: int) -> dict[str, int]:
    """Refuse prompts that fill ``max_length`` (TRL's DPO drops such rows silently,
    ``trainer/dpo_trainer.py:1140``); count the sequences that lose their end."""
    longest_prompt = max(p for p, _, _ in lengths)
    if longest_prompt >= max_length:
        raise out_of_range("max_length", max_length, f"max_length > {longest_prompt} (the longest prompt has "
                   f"{longest_prompt} tokens; a prompt must leave room for its answer)")
    longest = max(max(c, r) for _, c, r in lengths)
    truncated = sum((c > max_length) + (r > max_length) for _, c, r in lengths)
    return {"longest_prompt": longest_prompt, "longest_sequence": longest,
            "truncated_sequences": truncated, "max_length": max_length}
