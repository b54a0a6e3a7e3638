"""Beam tree DOT and the hypothesis ranking, on a hand-built beam trace."""

from __future__ import annotations

import re

import pytest

from app import charts_beam as cb
from decoding.trace import BeamNode, BeamStep, FinishedHypothesis, Generation, SequenceResult

NEG = -1.0e9


def generation() -> Generation:
    """num_beams 2, three steps.

    step 0: a (-1), b (-2)              from the prompt
    step 1: a→c (-2), a→d (-2.5)       b is pruned; b→EOS finished (Σ -2.2, L 2)
    step 2: all candidates finish at max length: c→e (Σ -3, L 3), d→"q\"" (Σ -3.6, L 3)
    """
    steps = [
        BeamStep(0, [BeamNode(0, 0, 1, "a", -1.0), BeamNode(1, 0, 2, "b", -2.0)], []),
        BeamStep(1, [BeamNode(0, 0, 3, "c", -2.0), BeamNode(1, 0, 4, "d", -2.5)],
                 [FinishedHypothesis(1, 1, [2, 9], -2.2, -1.1, 2, True)]),
        BeamStep(2, [BeamNode(0, 0, 5, "x", NEG), BeamNode(1, 1, 6, "y", NEG)],
                 [FinishedHypothesis(2, 0, [1, 3, 5], -3.0, -1.0, 3, True),
                  FinishedHypothesis(2, 1, [1, 4, 7], -3.6, -1.2, 3, False)]),
    ]
    return Generation(model="hand-built", prompt="p", chat=False, prompt_ids=[0],
                      config={"strategy": "beam", "num_beams": 2, "num_beam_groups": 1,
                              "length_penalty": 1.0},
                      chain=["raw"], beam_steps=steps,
                      sequences=[SequenceResult([1, 3, 5], "a c e", "length", score=-1.0,
                                                sum_logprob=-3.0),
                                 SequenceResult([2, 9], "b EOS", "eos", score=-1.1,
                                                sum_logprob=-2.2)])


TEXTS = {5: "e", 7: 'q"', 9: "<eos>"}


def test_node_statuses():
    assert cb.node_statuses(generation().beam_steps) == {
        (0, 0): "alive", (0, 1): "alive", (1, 0): "alive", (1, 1): "alive"}
    steps = generation().beam_steps[:2]   # stopped after step 1: its beams are still open
    assert cb.node_statuses(steps)[(1, 0)] == "open"
    steps[1].finished.clear()            # nothing continues b any more: pruned
    assert cb.node_statuses(steps)[(0, 1)] == "pruned"


def test_best_path_follows_parents_to_the_prompt():
    assert cb.best_path(generation()) == ((2, 0), {(1, 0), (0, 0)})


def test_dot_nodes_edges_and_best_path():
    dot = cb.beam_tree_dot(generation(), token_text=TEXTS.get)
    assert dot.startswith("digraph beam {") and dot.endswith("}")
    edges = re.findall(r"^(\w+) -> (\w+)", dot, flags=re.M)
    assert edges == [("root", "b0_0"), ("root", "b0_1"), ("b0_0", "b1_0"), ("b0_0", "b1_1"),
                     ("b0_1", "f1_0"), ("b1_0", "f2_0"), ("b1_1", "f2_1")]
    best = re.findall(rf'^(\w+) -> (\w+) \[color="{cb.BEST_COLOUR}"', dot, flags=re.M)
    assert best == [("root", "b0_0"), ("b0_0", "b1_0"), ("b1_0", "f2_0")]
    assert 'label="a\\n-1.00"' in dot                        # token and Σ log p
    assert 'label="■ e\\nscore -1.00\\nΣ -3.00, L=3"' in dot
    assert 'label="■ q\\"\\nscore -1.20\\nΣ -3.60, L=3"' in dot   # quote escaped
    assert "b2_0" not in dot                                  # impossible slots left out
    returned = re.search(r'^f2_0 \[(.*)\];$', dot, flags=re.M).group(1)
    dropped = re.search(r'^f2_1 \[(.*)\];$', dot, flags=re.M).group(1)
    assert cb.NODE_STYLES["returned"]["fillcolor"] in returned
    assert cb.NODE_STYLES["dropped"]["fillcolor"] in dropped


def test_dot_escapes_backslashes_of_control_tokens():
    gen = generation()
    gen.beam_steps[0].beams[0].token_text = "\x1f"
    assert 'label="\\\\x1f\\n-1.00"' in cb.beam_tree_dot(gen)


def test_ranking_before_and_after_length_normalisation():
    frame = cb.ranking_frame(generation(), decode=lambda ids: " ".join(map(str, ids)))
    assert list(frame.columns) == cb.RANKING_COLUMNS
    # by score: -1.0 (1 3 5), -1.1 (2 9), -1.2 (1 4 7); by Σ log p the short one wins.
    assert list(frame["text"]) == ["1 3 5", "2 9", "1 4 7"]
    assert list(frame["rank by score"]) == [1, 2, 3]
    assert list(frame["rank by Σ log p"]) == [2, 1, 3]
    assert list(frame["returned"]) == [True, True, False]
    assert list(frame["Σ log p"]) == pytest.approx([-3.0, -2.2, -3.6])


def test_ranking_leaves_unadmitted_scores_empty():
    gen = generation()
    gen.beam_steps[2].finished[1].score = NEG
    frame = cb.ranking_frame(gen)
    assert frame["score"].isna().tolist() == [False, False, True]
    assert frame["rank by score"].isna().tolist() == [False, False, True]


def test_deep_trees_are_laid_out_top_to_bottom():
    assert cb.tree_layout(cb.LR_MAX_STEPS) == "LR"
    assert cb.tree_layout(cb.LR_MAX_STEPS + 1) == "TB"          # 20 steps: rows, not 20 columns
    assert cb.tree_layout(20, "left to right") == "LR" and cb.tree_layout(3, "top to bottom") == "TB"
    with pytest.raises(ValueError, match="layout='sideways'"):
        cb.tree_layout(3, "sideways")
    assert "rankdir=TB;" in cb.beam_tree_dot(generation(), rankdir=cb.tree_layout(20))
