"""find_loops: each kind on hand-made sequences, hard negatives, onsets, whitespace, model-like
tokens; the labelled loop set and its evaluation table."""

from __future__ import annotations

import json
import re

import pytest

from decoding.diagnostics import LoopFinding, LoopRule, detect_loop, find_loops, text_pieces
from decoding.diagnostics.loop_kinds import lcs, text_units
from decoding.diagnostics.loop_set import (LOOP_SET_PATH, LabelledText, evaluate, exact_detector,
                                           format_table, kinds_detector, load_loop_set)
from decoding.diagnostics.summary import loop_spans
from decoding.errors import DecodingLabError

HORROR = ("The gate opened. The animals are all in horror. The animals are all in terror. "
          "The animals are all in fear. The animals are all in awe.")


def only(text_or_tokens, pieces=None) -> LoopFinding:
    found = find_loops(text_or_tokens, pieces)
    assert len(found) == 1, found
    return found[0]


def subword_pieces(text: str) -> list[str]:
    """A stand-in for a model tokenizer: words with their leading space, punctuation and line
    breaks as their own tokens, long words cut in two (``"".join(pieces) == text``)."""
    pieces = []
    for piece in re.findall(r" ?\w+|[^\w\s]|\s+", text):
        if len(piece) > 6:
            pieces += [piece[:4], piece[4:]]
        else:
            pieces.append(piece)
    assert "".join(pieces) == text
    return pieces


# ---------------------------------------------------------------------- exact


def test_exact_tail_keeps_detect_loops_report():
    loop = only("x y a b c a b c a b")
    legacy = detect_loop("x y a b c a b c a b")
    assert loop.kind == "exact" and not loop.ends_early
    assert (loop.period, loop.onset, loop.cycles, loop.partial) == (3, 2, 2, 2)
    assert loop.spans == legacy.spans and loop.length == legacy.length
    assert loop.char_onset == 4 and loop.char_span == (4, 19)
    assert loop_spans(loop) == [(2, 5, False), (5, 8, False), (8, 10, True)]


def test_exact_loop_cut_mid_cycle_on_model_like_tokens():
    block = "### Instruction:\nName a planet.\n\n### Response:\nMars.\n\n"
    text = "Mars is red.\n\n" + block * 3 + "### Instruction:\nName a pl"
    pieces = subword_pieces(text)
    ids = [hash(p) for p in pieces]
    loop = only(ids, pieces)
    assert loop.kind == "exact" and loop.cycles == 3 and loop.partial > 0
    assert loop.char_onset == text.index("### Instruction") and not loop.ends_early


def test_exact_loop_that_stops_mid_text():
    text = ("I waited in the hall. I looked at the door. I looked at the door. I looked at the "
            "door. I looked at the door. At last the handle turned and my sister came in with "
            "two bags of shopping.")
    loop = only(text)
    assert loop.kind == "exact" and loop.ends_early and loop.cycles == 4
    assert loop.char_onset == text.index("I looked")
    assert text[loop.char_span[1]:].strip().startswith("At last")


def test_two_cycles_in_the_middle_are_not_enough_but_three_are():
    two = "It was late. I went home. I went home. Then I slept until the next afternoon, happily."
    assert find_loops(two) == []
    three = two.replace("I went home. I went home.", "I went home. I went home. I went home.")
    assert only(three).ends_early


def test_model_token_loop_without_text_is_found_on_ids_alone():
    loop = only([7, 8, 9, 10] * 5)
    assert (loop.kind, loop.period, loop.cycles, loop.onset) == ("exact", 4, 5, 0)
    assert loop.char_span == (0, 20)    # without pieces, spans are in tokens


# ---------------------------------------------------------------------- template and near


def test_template_loop_reports_frame_and_slots():
    loop = only(HORROR)
    assert loop.kind == "template" and loop.cycles == 4
    assert loop.frame == "The animals are all in … ."
    assert loop.slots == [["horror"], ["terror"], ["fear"], ["awe"]]
    assert loop.char_onset == HORROR.index("The animals")


def test_template_headings_with_a_short_frame_need_five_cycles():
    five = "Done.\n### D-Zero:\n### D-One:\n### D-Two:\n### D-Three:\n### D-Four:\n"
    loop = only(five)
    assert loop.kind == "template" and loop.frame == "### D - … :"
    assert [s[0] for s in loop.slots] == ["Zero", "One", "Two", "Three", "Four"]
    assert find_loops("Done.\n### D-Zero:\n### D-One:\n### D-Two:\n") == []


def test_template_on_model_like_tokens_has_the_same_character_onset():
    pieces = subword_pieces(HORROR)
    loop = only([hash(p) for p in pieces], pieces)
    assert loop.kind == "template" and loop.char_onset == HORROR.index("The animals")
    assert pieces[loop.onset] == " The"      # the token holds the space; the character onset not
    assert "".join(pieces[:loop.onset + 1]) == HORROR[:loop.char_onset + 3]


def test_header_blocks_refilled_each_round_are_a_template_loop():
    text = ("Gold is Au.\n\n### Note:\nThe symbol for gold (Au) is a metal used in rings.\n\n"
            "### Note:\nThe symbol for gold, Au, is a metal used in coins.\n\n### Note:\nThe "
            "symbol for gold (aurum) is a soft metal used in rings.\n\n### Note:\nThe symbol")
    loop = only(text)
    assert loop.kind == "template" and loop.frame == "### Note : …"
    assert loop.char_onset == text.index("### Note") and loop.cycles >= 3
    sections = ("### Example:\nA cat sleeps all day.\n\n### Example:\nTrains leave at nine "
                "from platform two.\n\n### Example:\nPaint dries faster in the sun.\n")
    assert find_loops(sections) == []      # the same header over different content


def test_near_verbatim_loop():
    text = ("Drink water before you run. Remember to stay hydrated. Remember to stay hydrated. "
            "Remember to stay hydrated and rested. Remember to stay hydrated. Remember to stay "
            "hydrated.")
    loop = only(text)
    assert loop.kind == "near" and loop.cycles == 5 and loop.frame is None
    assert loop.char_onset == text.index("Remember")


def test_cycles_that_differ_only_in_line_breaks_are_exact():
    text = "Answer: modern.\n\nWhy: old.\nWhy: old.\n\n\nWhy: old.\n\nWhy: old.\nWhy: old.\n"
    loop = only(text)
    assert loop.kind == "exact" and loop.char_onset == text.index("Why")


# ---------------------------------------------------------------------- hard negatives

HARD_NEGATIVES = {
    "week plan": "Monday: rest. Tuesday: run 5 km. Wednesday: swim 1 km. Thursday: rest. "
                 "Friday: run 8 km. Saturday: ride. Sunday: rest.",
    "recipe": "Add the flour. Add the sugar. Add the butter. Add the eggs. Stir and bake.",
    "prose": "The river was low, and the river smelled of stone. We walked by the river each "
             "evening, and when the river rose we missed the stones.",
    "refrain": "The tide comes in, the tide goes out,\nthe gulls go round about,\nand still the "
               "lights burn on.\n\nThe boats come home at last,\nthe carts go rattling past,\n"
               "and still the lights burn on.\n\nThe children sleep, the kettles sing,\nthe bell "
               "rings out for everything,\nand still the lights burn on.",
    "times table": "3 x 1 = 3\n3 x 2 = 6\n3 x 3 = 9\n3 x 4 = 12\n3 x 5 = 15\n",
    "emphasis": "No, no, no! Not there. Park behind the bakery.",
}


@pytest.mark.parametrize("name", sorted(HARD_NEGATIVES))
def test_hard_negatives_are_not_loops(name):
    assert find_loops(HARD_NEGATIVES[name]) == []


def test_whitespace_repetition_is_not_a_loop_but_detect_loop_calls_it_one():
    pieces = ["The", " capital", " is", " Lima", ".", "\n", "\n"]
    assert detect_loop(pieces).is_loop            # the old rule: "\n" twice at the end
    assert find_loops(pieces, pieces) == []
    spaces = ["Yes", ".", "  ", "\n", "  ", "\n", "  ", "\n", "  ", "\n"]
    assert find_loops(spaces, spaces) == []
    assert find_loops("The capital is Lima.\n\n\n\n") == []


# ---------------------------------------------------------------------- pieces, rule, errors


def test_text_pieces_and_units():
    text = "  Hi there.\n1. Keep going: yes; no\n\n"
    assert "".join(text_pieces(text)) == text
    assert [text[a:b] for a, b in text_units(text)] == ["Hi there.", "1. Keep going:", "yes;",
                                                        "no"]
    assert lcs("a b c d".split(), "a x c d".split()) == ["a", "c", "d"]


def test_bad_input_names_the_parameter():
    with pytest.raises(DecodingLabError, match=r"similarity=0 is out of range"):
        LoopRule(similarity=0)
    with pytest.raises(DecodingLabError, match=r"min_cycles_mid=1 is out of range"):
        LoopRule(min_cycles_mid=1)
    with pytest.raises(DecodingLabError, match="pieces has 1 entries for 2 tokens"):
        find_loops([1, 2], ["a"])
    with pytest.raises(DecodingLabError, match="tokens of type int"):
        find_loops(3)


def test_the_rule_thresholds_change_the_verdict():
    text = "It was late. I went home. I went home. I went home. Then I slept until noon, happily."
    assert find_loops(text) and find_loops(text, rule=LoopRule(min_cycles_mid=4)) == []
    assert find_loops(HORROR, rule=LoopRule(similarity=0.95)) == []


def test_finding_round_trips_through_a_dict():
    loop = only(HORROR)
    data = json.loads(json.dumps(loop.to_dict()))
    assert LoopFinding.from_dict(data) == loop
    assert {"period", "cycles", "onset", "spans", "is_loop", "partial", "kind",
            "char_onset", "token_span"} <= set(data)


# ---------------------------------------------------------------------- the labelled set


def test_the_labelled_set_loads_with_both_splits_split_by_prompt():
    items = load_loop_set()
    assert len(items) >= 150
    assert {i.split for i in items} == {"dev", "test"}
    splits_of_group: dict[str, set] = {}
    for i in items:
        splits_of_group.setdefault(i.group, set()).add(i.split)
    assert all(len(s) == 1 for s in splits_of_group.values())
    sources = {i.source for i in items}
    assert {"greedy", "beam-4", "top-p 0.9", "hand-written"} <= sources
    assert {i.mode for i in items} >= {"raw", "chat"}
    loops = [i for i in items if i.loop]
    assert {i.kind for i in loops} == {"exact", "near", "template"}
    assert any(i.stops for i in loops) and len(loops) < len(items)
    for i in loops:
        assert not i.text[i.onset].isspace()
    assert len(load_loop_set(split="test")) + len(load_loop_set(split="dev")) == len(items)


def test_load_refuses_a_bad_label(tmp_path):
    bad = tmp_path / "set.jsonl"
    bad.write_text(json.dumps({"id": "a", "group": "g", "source": "s", "mode": "raw",
                               "split": "dev", "text": "abc", "loop": True, "kind": "odd",
                               "onset": 0}) + "\n")
    with pytest.raises(DecodingLabError, match="a loop needs kind"):
        load_loop_set(bad)
    with pytest.raises(DecodingLabError, match="split='train'"):
        load_loop_set(split="train")


def _item(i, loop, kind=None, onset=None, stops=False, text="t"):
    return LabelledText(id=f"x{i}", group=f"g{i}", source="s", mode="raw", split="test",
                        text=text, loop=loop, kind=kind, onset=onset, stops=stops)


def test_evaluate_computes_the_table_by_hand():
    items = [_item(0, True, "exact", 10), _item(1, True, "template", 5, stops=True),
             _item(2, True, "template", 0), _item(3, False), _item(4, False)]
    verdicts = {"x0": ("exact", 14), "x1": ("exact", 5), "x2": (None, None),
                "x3": ("near", 0), "x4": (None, None)}
    by_text = {}
    for n, i in enumerate(items):
        items[n] = i = LabelledText(**{**i.__dict__, "text": i.id})
        by_text[i.text] = verdicts[i.id]
    result = evaluate(items, lambda text: by_text[text])
    rows, overall = result["rows"], result["overall"]
    assert rows["exact"]["recall"] == 1.0 and rows["exact"]["onset_error"] == 4.0
    assert rows["exact"]["precision"] == 1.0 and rows["exact"]["predicted"] == 2
    assert rows["template"]["recall"] == 0.5 and rows["template"]["onset_error"] == 0.0
    assert rows["near"]["precision"] == 0.0 and rows["near"]["labelled"] == 0
    assert rows["stops"]["recall"] == 1.0
    assert overall["recall"] == pytest.approx(2 / 3)
    assert overall["false_positive_rate"] == 0.5 and overall["onset_error"] == 2.0
    assert overall["kind_agreement"] == 0.5
    assert result["misses"] == ["x2"] and result["false_alarms"] == ["x3"]
    assert "| **all loops** | 3 | **0.67** |" in "\n".join(format_table(result))


def test_both_detectors_score_on_the_shipped_test_split():
    items = load_loop_set(LOOP_SET_PATH, split="test")
    new = evaluate(items, kinds_detector())
    old = evaluate(items, exact_detector())
    assert new["overall"]["positives"] == old["overall"]["positives"] > 0
    # on the shipped set, the detector with kinds finds at least the loops the tail rule finds
    assert new["overall"]["recall"] >= old["overall"]["recall"]


# ---------------------------------------------------------------------- issue 16, second round:
# the kinds the first test run missed, and the hard negatives that look like them


def test_a_name_three_times_with_the_sentence_ending_after_the_third():
    text = ("We stayed at the Harbour View Hotel Harbour View Hotel Harbour View Hotel. The rooms "
            "were small but clean.")
    loop = only(text)          # "Hotel." and "Hotel" are one word to the token pass
    assert loop.kind == "exact" and loop.cycles == 3 and loop.ends_early
    assert loop.char_onset == text.index("Harbour")
    model = only([hash(p) for p in subword_pieces(text)], subword_pieces(text))
    assert model.cycles == 3 and model.char_onset == loop.char_onset


def test_a_name_three_times_joined_by_commas_and_and():
    text = ("The mayor thanked Greta Lindqvist, Greta Lindqvist and Greta Lindqvist for the "
            "years of work that went into the new park.")
    loop = only(text)
    assert loop.kind == "exact" and loop.cycles == 3 and loop.ends_early
    assert loop.char_onset == text.index("Greta")
    assert text[loop.char_span[0]:loop.char_span[1]].strip() == (
        "Greta Lindqvist, Greta Lindqvist and Greta Lindqvist")
    pieces = subword_pieces(text)
    assert only([hash(p) for p in pieces], pieces).char_onset == loop.char_onset


@pytest.mark.parametrize("text", [
    "She sang New York, New York at the show, and the prize was a ticket to the city.",
    "We thanked Greta Lindqvist and Greta Lindqvist for the park, then went home.",
    "It was a very, very, very long day, and by the end of it we were too tired to cook.",
    "The team from Bora Bora beat the team from Pago Pago, and the fans of Bora Bora sang.",
])
def test_names_and_emphasis_that_are_not_loops(text):
    assert find_loops(text) == []     # two copies mid-text, or one word thrice


COPIED_ITEMS = ("Names for a cafe by the sea:\n\n1. **Tide and Bean**: A warm name that joins "
                "the sound of the waves and the smell of fresh coffee.\n2. **Salt Cup**: A warm "
                "name that joins the sound of the waves and the smell of fresh coffee.\n3. "
                "**Harbour Brew**: A warm name that joins the sound of the waves and the smell "
                "of fresh coffee.\n4. **Driftwood**: A warm name")


def test_list_items_that_copy_one_description_under_new_titles():
    loop = only(COPIED_ITEMS)
    assert loop.kind == "template" and loop.cycles == 3 and not loop.ends_early
    assert loop.char_onset == COPIED_ITEMS.index("1. **Tide")
    assert "A warm name that joins the sound of the waves" in loop.frame
    assert [row[-1] for row in loop.slots] == ["Tide and Bean", "Salt Cup", "Harbour Brew"]
    assert find_loops(COPIED_ITEMS, rule=LoopRule(max_header_words=1)) == []


def test_list_items_with_their_own_descriptions_are_not_a_loop():
    text = ("Names for a cafe by the sea:\n\n1. **Tide and Bean**: it joins the sea and the "
            "coffee in one phrase.\n2. **Salt Cup**: short, easy to say, and it fits on a "
            "small sign.\n3. **Harbour Brew**: it tells people where you are before they walk "
            "in.\n4. **Driftwood**: warm, and it suits a wooden counter.\n")
    assert find_loops(text) == []


def test_paragraphs_that_come_back_under_changing_headers():
    a, b = "The pool reopens on Monday.", "The summary keeps the main fact and drops the rest."
    text = (f"Summarize the notice.\n\n### Output:\n{a}\n\n### Explanation:\n{b}\n\n### Response:"
            f"\n{a}\n\n### Note:\n{b}\n\n### Answer:\n{a}\n\n### Reason:\n{b}\n\n### Output:\nThe")
    loop = only(text)
    assert loop.char_onset == text.index("### Output:") and loop.cycles == 3
    assert not loop.ends_early


def test_the_same_headers_over_new_content_are_not_a_loop():
    recipes = ("Two soups.\n\n### Ingredients:\n2 carrots, 1 onion, a litre of stock.\n\n### "
               "Method:\nChop everything, simmer for twenty minutes and blend.\n\n### "
               "Ingredients:\n3 tomatoes, a clove of garlic, a handful of basil.\n\n### Method:\n"
               "Roast the tomatoes with the garlic, then blend with the basil and a little "
               "water.\n")
    assert find_loops(recipes) == []


def test_bare_headers_in_a_row_loop_from_eight_but_a_form_does_not():
    letters = "The answer is B.\n" + "".join(f"{c}:\n" for c in "ABCDEFGHIJKLMNOPQRST") + "U"
    loop = only(letters)        # a bare marker joins the next unit: "A:\nB:", "C:\nD:", ...
    assert loop.kind == "template" and loop.char_onset == letters.index("A:")
    assert loop.cycles == 10
    assert find_loops(letters, rule=LoopRule(min_cycles_bare_headers=11)) == []
    form = "Please fill in the form.\nName:\nAddress:\nPhone:\nEmail:\nSignature:\n"
    assert find_loops(form) == []


def test_header_blocks_that_restate_each_other_in_other_words():
    text = ("Water boils at 100 degrees Celsius.\n\n### Explanation:\nWater boils at 100 degrees "
            "Celsius at sea level because the air pressure there is one atmosphere.\n\n### "
            "Explanation:\nAt sea level the pressure of the air is one atmosphere, so water boils "
            "when it reaches 100 degrees.\n\n### Explanation:\nThe boiling point depends on the "
            "air pressure, which is one atmosphere at sea level, so water boils at 100 degrees "
            "there.\n\n### Explanation:\nWater reaches its boiling point at")
    loop = only(text)
    assert loop.kind == "template" and loop.frame == "### Explanation : …"
    assert loop.char_onset == text.index("### Explanation") and loop.cycles >= 3
    # a common subsequence keeps one word order: the restatements share under half of it
    assert find_loops(text, rule=LoopRule(block_similarity=0.8)) == []


# A real answer of the realign study (dpo-b0.1 at λ = 2, prompt 4): byte-level BPE writes each
# "ら" as two tokens, each of which alone decodes to U+FFFD.
RA_LOOP_IDS = [53, 15751, 27409, 198, 7365, 231, 10391, 233, 10391, 227, 46763, 198, 11100, 234, 10391,
               121, 35130, 198, 11100, 234, 10391, 121, 35130, 11100, 227, 198, 11100, 234, 10391, 121,
               35130, 11100, 227, 11100, 136] + [10391, 227] * 14 + [10391]


def test_token_pieces_give_whole_characters_and_join_to_the_text(embedded):
    pieces = embedded.token_pieces(RA_LOOP_IDS)
    assert "".join(pieces) == embedded.decode(RA_LOOP_IDS, skip_special_tokens=False)
    assert "\ufffd" not in "".join(pieces[:-1])          # only the unfinished last character
    assert pieces[35:39] == ["", "ら", "", "ら"]
    ascii_ids = embedded.encode("Hello there. Hello there!", chat=True)
    assert embedded.token_pieces(ascii_ids) == [embedded.token_text(t) for t in ascii_ids]


def test_a_kana_loop_is_found_from_model_pieces_and_from_the_text_alone(embedded):
    found = only(RA_LOOP_IDS, embedded.token_pieces(RA_LOOP_IDS))
    text = embedded.decode(RA_LOOP_IDS, skip_special_tokens=False)
    assert (found.kind, found.period, found.cycles) == ("exact", 2, 14)
    assert set(text[found.char_span[0]:found.char_span[1]]) == {"ら"}
    # the lossy per-token texts (every byte token "\ufffd") hid it behind a short early loop
    lossy = find_loops(RA_LOOP_IDS, [embedded.token_text(t) for t in RA_LOOP_IDS])
    assert not any(set(text[f.char_span[0]:f.char_span[1]]) == {"ら"} for f in lossy)
    by_text = only(text.rstrip("\ufffd"))
    assert (by_text.period, by_text.cycles) == (1, 14)


def test_spaceless_scripts_split_into_characters_without_inventing_loops():
    assert text_pieces("日本の映画 ok") == ["日", "本", "の", "映", "画 ", "ok"]
    assert find_loops("日本の映画はとても面白いです。私の友達の本の表紙の色は青です。") == []
    assert find_loops("Plain English text, with no loop at all in it.") == []
