"""The decoding strategies the degeneration study compares, as (label, spec) pairs.

Holtzman et al. 2020 (Table 1) compare greedy, beam, pure sampling, top-k, nucleus and
temperature; we add the later truncations (min-p, typical) and the repetition fixes (CTRL
penalty, no-repeat n-gram, DRY, contrastive search). The penalties are applied to greedy
decoding, so their effect on the deterministic loop is seen alone. A spec whose strategy or
field this version of ``DecodingConfig`` lacks is skipped with a note, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from decoding import DecodingConfig
from decoding.errors import DecodingLabError
from decoding.specs import parse_spec

STUDY_STRATEGIES: list[tuple[str, str]] = [
    ("greedy", "greedy"),
    ("beam-4", "beam:num_beams=4"),
    ("beam-8", "beam:num_beams=8"),
    ("pure sampling", "sample"),
    ("top-k 40", "sample:top_k=40"),
    ("top-p 0.9", "sample:top_p=0.9"),
    ("top-p 0.95", "sample:top_p=0.95"),
    ("T 0.7 + top-p 0.95", "sample:temperature=0.7,top_p=0.95"),
    ("T 1.3 + top-p 0.95", "sample:temperature=1.3,top_p=0.95"),
    ("min-p 0.1", "sample:min_p=0.1"),
    ("typical 0.95", "sample:typical_p=0.95"),
    ("greedy + rep. penalty 1.2", "greedy:repetition_penalty=1.2"),
    ("greedy + no-repeat 3-gram", "greedy:no_repeat_ngram_size=3"),
    ("greedy + DRY 0.8", "greedy:dry_multiplier=0.8"),
    ("contrastive α0.6 k4", "contrastive:penalty_alpha=0.6,top_k=4"),
]

# --quick keeps Holtzman's three reference rows (greedy, beam, nucleus 0.95), pure sampling and
# one repetition fix: the shape of Table 1 in under two minutes.
QUICK_STRATEGIES = ("greedy", "beam-4", "pure sampling", "top-p 0.95",
                    "greedy + rep. penalty 1.2")

# Holtzman et al. 2020, Table 1 (GPT-2 Large, 5,000 WebText passages, <= 200 tokens).
HOLTZMAN_REPETITION = {"greedy": 73.66, "beam-16": 28.94, "nucleus p=0.95": 0.36, "human": 0.28}


@dataclass(frozen=True)
class StudyStrategy:
    label: str
    spec: str
    config: DecodingConfig

    @property
    def rows_per_prompt(self) -> int:
        """Model rows one prompt occupies in a batch (beams, or contrastive's k candidates)."""
        if self.config.strategy == "beam":
            return self.config.num_beams
        if self.config.strategy == "contrastive":
            return max(1, self.config.top_k)
        return self.config.num_return_sequences


def resolve_strategies(base: DecodingConfig, labels: tuple[str, ...] | list[str] | None = None,
                       table: list[tuple[str, str]] | None = None
                       ) -> tuple[list[StudyStrategy], list[tuple[str, str]]]:
    """(strategies to run, [(label, why skipped)]) for ``labels`` (default: the whole table)."""
    table = STUDY_STRATEGIES if table is None else table
    known = [label for label, _ in table]
    if labels is not None:
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise DecodingLabError(f"unknown study strateg{'y' if len(unknown) == 1 else 'ies'} "
                                   f"{', '.join(map(repr, unknown))}; allowed: "
                                   f"{', '.join(map(repr, known))}")
    chosen, skipped = [], []
    for label, spec in table:
        if labels is not None and label not in labels:
            continue
        try:
            chosen.append(StudyStrategy(label, spec, parse_spec(spec, base).config))
        except DecodingLabError as exc:
            skipped.append((label, str(exc).split("; syntax:")[0]))
    return chosen, skipped


def holtzman_counterparts(labels: list[str]) -> dict[str, tuple[str, float]]:
    """{our label: (Holtzman row, their repetition %)}: greedy, our widest beam (beside their
    beam-16) and top-p 0.95 (beside their nucleus p=0.95), in Table 1's order."""
    placed = {}
    if "greedy" in labels:
        placed["greedy"] = ("greedy", HOLTZMAN_REPETITION["greedy"])
    beams = [label for label in labels if label.startswith("beam-")]
    if beams:
        widest = max(beams, key=lambda label: int(label.split("-")[1]))
        placed[widest] = ("beam-16", HOLTZMAN_REPETITION["beam-16"])
    if "top-p 0.95" in labels:
        placed["top-p 0.95"] = ("nucleus p=0.95", HOLTZMAN_REPETITION["nucleus p=0.95"])
    return placed
