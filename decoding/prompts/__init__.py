"""Prompt sets shipped with Decoding Lab, as JSON files beside this module.

A set is ``{"name", "description", "prompts": [{"id", "text", "mode", "category", ...}]}``:
``mode`` is ``"raw"`` (continue the text as it is) or ``"chat"`` (the text is the user turn of
the chat template); other keys of a prompt are kept in ``Prompt.extra``. Every prompt was
written for this project.

- ``open_ended``: 50 openings to continue (news, story, encyclopedic) and 22 chat questions,
  for the degeneration study.
- ``template_loop``: Alpaca-style ``### Instruction:`` prompts that a small base/instruct model
  answers and then loops on when it may not stop (``declab demo template-loop``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DecodingLabError

PROMPT_DIR = Path(__file__).resolve().parent
MODES = ("raw", "chat")


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    mode: str = "raw"          # "raw" | "chat"
    category: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def chat(self) -> bool:
        return self.mode == "chat"


@dataclass(frozen=True)
class PromptSet:
    name: str
    description: str
    prompts: list[Prompt]

    def __len__(self) -> int:
        return len(self.prompts)

    def categories(self) -> list[str]:
        return list(dict.fromkeys(p.category for p in self.prompts))

    def subset(self, per_category: int | None = None, ids: list[str] | None = None) -> PromptSet:
        """The first ``per_category`` prompts of every category, and/or the prompts in ``ids``."""
        chosen = self.prompts
        if ids is not None:
            known = {p.id for p in self.prompts}
            missing = [i for i in ids if i not in known]
            if missing:
                raise DecodingLabError(f"prompt id(s) {', '.join(missing)} not in set "
                                       f"{self.name!r}; allowed: {', '.join(sorted(known))}")
            chosen = [p for p in chosen if p.id in set(ids)]
        if per_category is not None:
            counts: dict[str, int] = {}
            kept = []
            for p in chosen:
                if counts.get(p.category, 0) < per_category:
                    kept.append(p)
                    counts[p.category] = counts.get(p.category, 0) + 1
            chosen = kept
        return PromptSet(self.name, self.description, list(chosen))


def available_prompt_sets() -> list[str]:
    return sorted(p.stem for p in PROMPT_DIR.glob("*.json"))


def _parse_prompt(data: Any, where: str) -> Prompt:
    if not isinstance(data, dict):
        raise DecodingLabError(f"{where} is not an object; allowed: {{\"id\", \"text\", \"mode\"}}")
    for key in ("id", "text"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise DecodingLabError(f"{where}: {key!r} is missing or empty; allowed: a non-empty string")
    mode = data.get("mode", "raw")
    if mode not in MODES:
        raise DecodingLabError(f"{where}: mode={mode!r}; allowed: {' | '.join(MODES)}")
    extra = {k: v for k, v in data.items() if k not in ("id", "text", "mode", "category")}
    return Prompt(id=data["id"], text=data["text"], mode=mode,
                  category=str(data.get("category", "")), extra=extra)


def load_prompt_set(name: str) -> PromptSet:
    """A shipped set by name (``available_prompt_sets()``), or a JSON file of the same shape."""
    path = Path(name)
    if not path.suffix:
        path = PROMPT_DIR / f"{name}.json"
        if not path.is_file():
            raise DecodingLabError(f"prompt set {name!r} does not exist; allowed: "
                                   f"{', '.join(available_prompt_sets())} or a .json file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DecodingLabError(f"prompt set file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise DecodingLabError(f"prompt set file {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), list) or not data["prompts"]:
        raise DecodingLabError(f"prompt set file {str(path)!r} has no \"prompts\" list; allowed: "
                               "{\"name\", \"description\", \"prompts\": [...]}")
    prompts = [_parse_prompt(p, f"{path.name} prompts[{i}]") for i, p in enumerate(data["prompts"])]
    ids = [p.id for p in prompts]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DecodingLabError(f"prompt set {path.name}: duplicate id(s) {', '.join(duplicates)}")
    return PromptSet(name=str(data.get("name", path.stem)),
                     description=str(data.get("description", "")), prompts=prompts)
