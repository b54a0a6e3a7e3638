"""Pure builders for the Beam explorer: the beam tree as Graphviz DOT text and the ranking of the
finished hypotheses before and after length normalisation.

Everything is read from the ``Generation``'s beam trace (``BeamStep``: the running beams after
each step with their parent and cumulative score; ``FinishedHypothesis``: every hypothesis that
entered the finished pool). Nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from decoding.trace import BeamStep, Generation

from .charts import FONT_SIZE, text_colour, visible_text

NEG_HALF = -0.5e9  # beam.py marks impossible scores with -1e9: anything below this is "none"

# Okabe & Ito fills. Running beams that have children (light sky blue), beams cut at the next
# step (grey), beams still open when the search stopped (white), finished hypotheses returned
# (bluish green) or dropped from the pool (light grey); the best hypothesis's path in vermilion.
NODE_STYLES = {
    "alive": {"fillcolor": "#CCE6F6", "style": "rounded,filled"},
    "pruned": {"fillcolor": "#EEEEEE", "style": "rounded,filled,dashed", "fontcolor": "#666666"},
    "open": {"fillcolor": "#FFFFFF", "style": "rounded,filled,dashed"},
    "returned": {"fillcolor": "#009E73", "style": "filled", "peripheries": "2"},
    "dropped": {"fillcolor": "#DDDDDD", "style": "filled,dashed", "peripheries": "2",
                "fontcolor": "#666666"},
}
BEST_COLOUR = "#D55E00"
GROUP_COLOURS = ["#0072B2", "#E69F00", "#CC79A7", "#56B4E9", "#009E73", "#F0E442", "#000000"]
MAX_LABEL = 18


def _dot_string(text: str) -> str:
    """A DOT double-quoted string body: backslashes and quotes escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _label(*lines: str) -> str:
    return "\\n".join(_dot_string(line) for line in lines)


def _token_label(text: str) -> str:
    shown = visible_text(text)
    return shown if len(shown) <= MAX_LABEL else shown[:MAX_LABEL - 1] + "…"


def _attrs(**attrs: str) -> str:
    return "[" + ", ".join(f'{k}="{v}"' for k, v in attrs.items()) + "]"


def node_statuses(steps: list[BeamStep]) -> dict[tuple[int, int], str]:
    """(step, beam) → alive (extended at the next step), pruned (not extended, search went on)
    or open (still running when the search stopped). Beams with an impossible score (the slots
    left after every candidate finished) are left out."""
    extended = set()
    for t, step in enumerate(steps):
        if t == 0:
            continue
        extended |= {(t - 1, n.parent) for n in step.beams if n.score > NEG_HALF}
        extended |= {(t - 1, f.parent) for f in step.finished}
    last = len(steps) - 1
    statuses = {}
    for t, step in enumerate(steps):
        for n in step.beams:
            if n.score <= NEG_HALF:
                continue
            statuses[(t, n.beam)] = ("alive" if (t, n.beam) in extended
                                     else "open" if t == last else "pruned")
    return statuses


def best_path(generation: Generation) -> tuple[tuple[int, int] | None, set[tuple[int, int]]]:
    """The finished record (step, index in that step's ``finished``) of the returned best
    hypothesis, and the (step, beam) nodes on its path from the prompt."""
    if not generation.sequences or not generation.beam_steps:
        return None, set()
    best = generation.sequences[0].token_ids
    steps = generation.beam_steps
    for t, step in enumerate(steps):
        for k, f in enumerate(step.finished):
            if f.kept and f.token_ids == best:
                path, parent = set(), f.parent
                for s in range(t - 1, -1, -1):
                    path.add((s, parent))
                    parent = steps[s].beams[parent].parent
                return (t, k), path
    return None, set()


LR_MAX_STEPS = 8   # deeper trees are drawn top to bottom (below)


def tree_layout(steps: int, choice: str = "auto") -> str:
    """Graphviz ``rankdir`` for a tree of ``steps`` steps. Left to right, a 20-step tree is 20
    columns wide and the page scales it down to ~4 px text; top to bottom, the width is one
    step's beams (≤ 2 × num_beams boxes with the finished ones) and the depth becomes height,
    which the page scrolls. ``auto``: left to right up to ``LR_MAX_STEPS`` steps."""
    layouts = {"left to right": "LR", "top to bottom": "TB"}
    if choice == "auto":
        return "LR" if steps <= LR_MAX_STEPS else "TB"
    if choice not in layouts:
        raise ValueError(f"layout={choice!r} is not allowed; allowed: auto, {', '.join(layouts)}")
    return layouts[choice]


def beam_tree_dot(generation: Generation, token_text: Callable[[int], str] | None = None,
                  rankdir: str = "LR") -> str:
    """The beam tree as Graphviz DOT: the prompt, every running beam after every step (token and
    cumulative log-probability), pruned and open beams, and every finished hypothesis (its last
    token, its length-normalised score, its Σ log p and length). The best returned hypothesis's
    path is drawn in vermilion. With diverse beam search each group has its own border colour.

    token_text: id → text, for the last token of a finished hypothesis (the trace records its
    id only); without it the id is shown.
    """
    steps = generation.beam_steps
    config = generation.config
    groups = int(config.get("num_beam_groups", 1) or 1)
    width = max(int(config.get("num_beams", 1)) // groups, 1)
    statuses = node_statuses(steps)
    best, path = best_path(generation)
    name = token_text or (lambda i: f"#{i}")

    lines = ["digraph beam {", f"rankdir={rankdir};", "nodesep=0.15; ranksep=0.35;",
             f'node [shape=box, fontname="Helvetica", fontsize={FONT_SIZE}, margin="0.12,0.06"];',
             'edge [color="#999999", arrowsize=0.6];',
             f'root {_attrs(label="prompt", shape="ellipse", style="filled", fillcolor="#FFFFFF")};']

    def parent_id(t: int, parent: int) -> str:
        return "root" if t == 0 else f"b{t - 1}_{parent}"

    def edge(source: str, target: str, on_path: bool) -> str:
        extra = f' [color="{BEST_COLOUR}", penwidth=3]' if on_path else ""
        return f"{source} -> {target}{extra};"

    for t, step in enumerate(steps):
        for n in step.beams:
            status = statuses.get((t, n.beam))
            if status is None:
                continue
            attrs = dict(NODE_STYLES[status])
            attrs["label"] = _label(_token_label(n.token_text), f"{n.score:.2f}")
            attrs["tooltip"] = _dot_string(f"step {t}, beam {n.beam} ({status}): "
                                           f"Σ log p = {n.score:.3f}")
            if groups > 1:
                attrs.update(color=GROUP_COLOURS[(n.beam // width) % len(GROUP_COLOURS)],
                             penwidth="2")
            on_path = (t, n.beam) in path
            if on_path:
                attrs.update(color=BEST_COLOUR, penwidth="3")
            lines.append(f"b{t}_{n.beam} {_attrs(**attrs)};")
            lines.append(edge(parent_id(t, n.parent), f"b{t}_{n.beam}", on_path))
        for k, f in enumerate(step.finished):
            status = "returned" if f.kept else "dropped"
            attrs = dict(NODE_STYLES[status])
            attrs["fontcolor"] = attrs.get("fontcolor", text_colour(attrs["fillcolor"]))
            score = "not admitted" if f.score <= NEG_HALF else f"score {f.score:.2f}"
            attrs["label"] = _label("■ " + _token_label(name(f.token_ids[-1])), score,
                                    f"Σ {f.raw_score:.2f}, L={f.length}")
            attrs["tooltip"] = _dot_string(f"finished at step {t} ({status})")
            on_path = best == (t, k)
            if on_path:
                attrs.update(color=BEST_COLOUR, penwidth="3")
            lines.append(f"f{t}_{k} {_attrs(**attrs)};")
            lines.append(edge(parent_id(t, f.parent), f"f{t}_{k}", on_path))
    lines.append("}")
    return "\n".join(lines)


RANKING_COLUMNS = ["text", "tokens", "Σ log p", "score", "rank by Σ log p", "rank by score",
                   "returned", "finished at step"]


def ranking_frame(generation: Generation, decode: Callable[[list[int]], str] | None = None
                  ) -> pd.DataFrame:
    """Every finished hypothesis of the beam trace, best normalised score first.

    Σ log p: the raw cumulative score (the ranking before length normalisation); score:
    Σ log p / L^length_penalty, the ranking beam search uses (None for a hypothesis that
    finished when the pool was already settled, so it was never scored). Ranks: 1 = best;
    ties share the better rank.
    """
    decode = decode or (lambda ids: " ".join(f"#{i}" for i in ids))
    rows = [{"text": visible_text(decode(f.token_ids), spaces=False), "tokens": f.length,
             "Σ log p": f.raw_score, "score": f.score if f.score > NEG_HALF else None,
             "returned": f.kept, "finished at step": step.step}
            for step in generation.beam_steps for f in step.finished]
    frame = pd.DataFrame(rows, columns=[c for c in RANKING_COLUMNS if not c.startswith("rank")])
    frame["score"] = frame["score"].astype(float)
    frame["rank by Σ log p"] = frame["Σ log p"].rank(ascending=False, method="min").astype("Int64")
    frame["rank by score"] = frame["score"].rank(ascending=False, method="min").astype("Int64")
    frame = frame.sort_values(["rank by score", "rank by Σ log p"], na_position="last",
                              kind="stable").reset_index(drop=True)
    return frame[RANKING_COLUMNS]
