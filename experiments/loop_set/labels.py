"""Labels of the model texts in the loop set, written by reading each text (see
``decoding/diagnostics/data/README.md`` for the guide). Key: ``"prompt_id|decoding"``; value:
``None`` (no loop) or ``(kind, onset_anchor, stops, note)`` — the loop starts at the first
occurrence of ``onset_anchor`` (``"@N:..."``: the N-th)."""

from __future__ import annotations

MODEL_LABELS: dict[str, object] = {
    # news-01: the harbour bridge
    "news-01|greedy": ("near", "The bridge, which was built", False,
                       "paragraphs 2-4 restate one another with swapped details"),
    "news-01|beam-4": ("exact", "@2:The bridge was closed to cars in 2013", False,
                       "A B A A: the last sentence comes back twice, the second copy cut"),
    "news-01|top-p 0.9": None,
    "news-01|greedy + rep. penalty 1.2": None,
    "news-01|greedy + DRY 0.8": None,
    "news-01|greedy + no-repeat 3-gram": None,
    # news-04: the bakery
    "news-04|greedy": None,   # paragraphs share "The bakery's owner is also a ..." but add facts
    "news-04|beam-4": ("exact", "The bakery's owner, Elena, is also known", False, ""),
    "news-04|top-p 0.9": None,
    "news-04|greedy + rep. penalty 1.2": None,
    "news-04|greedy + DRY 0.8": None,
    "news-04|greedy + no-repeat 3-gram": None,
    # news-08: the museum guard
    "news-08|greedy": ("near", "The seam was just a tiny little thing", False,
                       "seam sentence and guard paragraph alternate, the seam sentence doubled"),
    "news-08|beam-4": ("near", "The museum guard's eyes widened as", False,
                       "two cycles, the second adds 'even further'"),
    "news-08|top-p 0.9": None,
    "news-08|greedy + rep. penalty 1.2": None,
    "news-08|greedy + DRY 0.8": ("template", "The seam was just a tiny tiny thing", False,
                                 "tiny / small tiny / little tiny tiny ..."),
    "news-08|greedy + no-repeat 3-gram": None,
    # news-12: the parrot
    "news-12|greedy": ("exact", "The parrot is named", False, ""),
    "news-12|beam-4": ("near", "The police officer is now looking", False,
                       "first copy has 'now', the rest verbatim"),
    "news-12|top-p 0.9": ("exact", "Anchorage Bulb News", True, "a name three times mid-text"),
    "news-12|greedy + rep. penalty 1.2": None,
    "news-12|greedy + DRY 0.8": ("template", "Jack has a 5-year-old son", False,
                                 "ages and relatives change, 'named \"Elie\"' stays"),
    "news-12|greedy + no-repeat 3-gram": None,
    # story-01: the lighthouse keeper
    "story-01|greedy": ("exact", "He was a man with a beard", False, ""),
    "story-01|beam-4": ("exact", "The most likely explanation for this is", False, ""),
    "story-01|top-p 0.9": None,
    "story-01|greedy + rep. penalty 1.2": None,
    "story-01|greedy + DRY 0.8": ("template", "He was wearing a cloak", False,
                                  "He was wearing a cloak / a helmet / a sword / ..."),
    "story-01|greedy + no-repeat 3-gram": None,   # 'Captain' over and over, but no cycle
    # story-04: the robot that wanted to paint
    "story-04|greedy": ("exact", "@2:The robot's creators decided", False,
                        "first copy is followed by another sentence; the run starts at the second"),
    "story-04|beam-4": ("exact", "The robot was tasked", False, ""),
    "story-04|top-p 0.9": None,
    "story-04|greedy + rep. penalty 1.2": None,
    "story-04|greedy + DRY 0.8": ("near", "The robot's creators realized that", False,
                                  "the same sentence reworded at different places every time"),
    "story-04|greedy + no-repeat 3-gram": None,
    # story-07: the dragon that cannot breathe fire
    "story-07|greedy": ("exact", "He had been a hero, but", False, ""),
    "story-07|beam-4": None,  # "I saw a glimmer of ..." five times: a closed rhetorical list
    "story-07|top-p 0.9": None,
    "story-07|greedy + rep. penalty 1.2": None,
    "story-07|greedy + DRY 0.8": None,   # "The fire was a symbol / a metaphor / also a symbol"
    "story-07|greedy + no-repeat 3-gram": None,
    # story-12: the detective
    "story-12|greedy": ("template", "The detective's first instinct", False,
                        "first / second / third ... instinct, the quote verbatim"),
    "story-12|beam-4": ("template", "The detective said", False,
                        "two-line dialogue whose past / future swap"),
    "story-12|top-p 0.9": None,
    "story-12|greedy + rep. penalty 1.2": None,
    "story-12|greedy + DRY 0.8": ("template", "The detective's first instinct", False,
                                  "ordinal slot; the quote shrinks to 'I'm not sure.'"),
    "story-12|greedy + no-repeat 3-gram": None,
    # encyclopedic-02: photosynthesis
    "encyclopedic-02|greedy": None,
    "encyclopedic-02|beam-4": None,
    "encyclopedic-02|top-p 0.9": None,
    "encyclopedic-02|greedy + rep. penalty 1.2": None,
    "encyclopedic-02|greedy + DRY 0.8": None,
    "encyclopedic-02|greedy + no-repeat 3-gram": None,
    # encyclopedic-05: the honeybee
    "encyclopedic-05|greedy": ("exact", "The colony is managed by a queen bee, which", False, ""),
    "encyclopedic-05|beam-4": ("near", "Each colony is made up", False,
                               "the first paragraph is a near copy of the verbatim ones after "
                               "it (revised on a second reading: first labelled exact from "
                               "paragraph 2, against the guide)"),
    "encyclopedic-05|top-p 0.9": None,   # five blank lines: whitespace, not a loop
    "encyclopedic-05|greedy + rep. penalty 1.2": None,
    "encyclopedic-05|greedy + DRY 0.8": None,
    "encyclopedic-05|greedy + no-repeat 3-gram": None,
    # encyclopedic-09: the heart
    "encyclopedic-09|greedy": None,   # right / left atrium: two sentences in one frame, then on
    "encyclopedic-09|beam-4": None,
    "encyclopedic-09|top-p 0.9": None,
    "encyclopedic-09|greedy + rep. penalty 1.2": None,   # a long comma list, no cycle
    "encyclopedic-09|greedy + DRY 0.8": None,
    "encyclopedic-09|greedy + no-repeat 3-gram": None,
    # encyclopedic-15: glass
    "encyclopedic-15|greedy": None,
    "encyclopedic-15|beam-4": ("exact", "The process is also used in the production of other "
                               "chemicals, such as ammonia", False, ""),
    "encyclopedic-15|top-p 0.9": None,
    "encyclopedic-15|greedy + rep. penalty 1.2": None,
    "encyclopedic-15|greedy + DRY 0.8": None,
    "encyclopedic-15|greedy + no-repeat 3-gram": None,
    # chat-02: sleep habits (numbered lists)
    "chat-02|greedy": None,
    "chat-02|beam-4": None,
    "chat-02|top-p 0.9": None,
    "chat-02|greedy + rep. penalty 1.2": None,
    "chat-02|greedy + DRY 0.8": None,
    "chat-02|greedy + no-repeat 3-gram": None,
    # chat-06: learning a language (numbered lists whose items share a frame)
    "chat-06|greedy": None,
    "chat-06|beam-4": None,
    "chat-06|top-p 0.9": None,
    "chat-06|greedy + rep. penalty 1.2": None,
    "chat-06|greedy + DRY 0.8": None,   # "Learn by Doing / Learn by Watching": list items
    "chat-06|greedy + no-repeat 3-gram": None,
    # chat-08: camping
    "chat-08|greedy": None,
    "chat-08|beam-4": None,   # close: two sizes end "1 to 2 meters (3.3 to 6.6 feet) in width"
    "chat-08|top-p 0.9": None,
    "chat-08|greedy + rep. penalty 1.2": None,
    "chat-08|greedy + DRY 0.8": None,
    "chat-08|greedy + no-repeat 3-gram": ("template", "Don't forget the essentials", False,
                                          "'Don't forget X, X and Y' with the apostrophe "
                                          "mangled each time"),
    # chat-15: a poem about the moon
    "chat-15|greedy": ("exact", "@2:A moon's gentle glow, a beacon", False, ""),
    "chat-15|beam-4": ("near", "The moon's silver glow", False,
                       "the same stanza over and over, the first copy one line short"),
    "chat-15|top-p 0.9": None,
    "chat-15|greedy + rep. penalty 1.2": None,
    "chat-15|greedy + DRY 0.8": None,   # close: "A moon that ..." lines babble, but no cycle
    "chat-15|greedy + no-repeat 3-gram": None,
    # chat-21: breakfast for a runner
    "chat-21|greedy": ("near", "You could have a breakfast that's a mix", False,
                       "'For example,' and a lower-case 'you' between copies"),
    "chat-21|beam-4": ("template", "1. **Breakfast of Champions**", False,
                       "close: item 2 copies item 1's description under a new title"),
    "chat-21|top-p 0.9": None,
    "chat-21|greedy + rep. penalty 1.2": None,
    "chat-21|greedy + DRY 0.8": None,   # "You could (also) have a breakfast of ...": options
    "chat-21|greedy + no-repeat 3-gram": None,
    # template_loop prompts: raw Alpaca format, end-of-sequence suppressed
    "largest-planet|greedy": ("near", "It is a response that completes the request by", False,
                              "the explanation block restates itself, then one sentence "
                              "verbatim"),
    "largest-planet|beam-4": ("exact", "The largest planet", False,
                              "the answer and '### Explanation:' alternate from the start"),
    "largest-planet|top-p 0.9": None,
    "largest-planet|greedy + rep. penalty 1.2": None,
    "largest-planet|greedy + DRY 0.8": ("template", "### Explanation:", False,
                                        "Explanation / Instruction / Response blocks with new "
                                        "content each round (seed 002's failure)"),
    "largest-planet|greedy + no-repeat 3-gram": None,
    "antonym|greedy": ("exact", "The ancient city", False, ""),
    "antonym|beam-4": ("exact", "The answer to the question", False, ""),
    "antonym|top-p 0.9": ("template", "Please provide the next instruction", False,
                          "close: Instruction / Input / Response blocks with new content"),
    "antonym|greedy + rep. penalty 1.2": None,
    "antonym|greedy + DRY 0.8": ("template", "The ancient city", False,
                                 "'### Expected Output: The ancient city of X.' with X changing"),
    "antonym|greedy + no-repeat 3-gram": None,
    "plural|greedy": ("exact", "The word mouse", False, ""),
    "plural|beam-4": ("exact", "### Explanation:", False, "the answer above is a near copy"),
    "plural|top-p 0.9": None,
    "plural|greedy + rep. penalty 1.2": None,
    "plural|greedy + DRY 0.8": ("template", "The word mouse", False,
                                "'The word mouse is X. It is Y.' under '### Explanation:'"),
    "plural|greedy + no-repeat 3-gram": None,
    "gold-symbol|greedy": ("exact", "The chemical symbol for gold is Au, which", False, ""),
    "gold-symbol|beam-4": ("exact", "### Explanation:", False, ""),
    "gold-symbol|top-p 0.9": None,
    "gold-symbol|greedy + rep. penalty 1.2": None,
    "gold-symbol|greedy + DRY 0.8": ("template", "### Explanation:", False,
                                     "'The chemical symbol for gold (X) is a metal ...'"),
    "gold-symbol|greedy + no-repeat 3-gram": None,   # backtick lines, no words to repeat
    "summary|greedy": ("exact", "The village library has made", False, ""),
    "summary|beam-4": ("near", "The new reading room", False,
                       "two paragraphs alternate under Output / Explanation headers"),
    "summary|top-p 0.9": None,
    "summary|greedy + rep. penalty 1.2": None,
    "summary|greedy + DRY 0.8": ("template", "The village library has made", False,
                                 "close: '### Output: The village library ...' with new "
                                 "praise each time"),
    "summary|greedy + no-repeat 3-gram": None,
    # Added later (dev split): list and header prompts, the kinds the first test run missed.
    # chat-10: a coffee shop name
    "chat-10|greedy": None,   # "a bold, bold personality": emphasis
    "chat-10|beam-4": ("template", '2. "Mermen', False,
                       "items 2-9 the same name under new numbers; item 1 is another name"),
    "chat-10|top-p 0.9": None,
    "chat-10|greedy + rep. penalty 1.2": None,
    "chat-10|greedy + DRY 0.8": None,
    "chat-10|greedy + no-repeat 3-gram": None,
    # chat-16: benefits of walking
    "chat-16|greedy": None,   # close: "It's also a great way to ..." comes back, but no cycle
    "chat-16|beam-4": None,
    "chat-16|top-p 0.9": None,   # list items framed "**X**: ...", each new
    "chat-16|greedy + rep. penalty 1.2": None,
    "chat-16|greedy + DRY 0.8": None,
    "chat-16|greedy + no-repeat 3-gram": None,
    # boiling-point: raw Alpaca prompt, end-of-sequence suppressed
    "boiling-point|greedy": ("near", "### Explanation:", False,
                             "Explanation blocks restate one sentence, then it comes verbatim"),
    "boiling-point|beam-4": ("exact", "### Explanation:", False, ""),
    "boiling-point|top-p 0.9": None,
    "boiling-point|greedy + rep. penalty 1.2": None,
    "boiling-point|greedy + DRY 0.8": ("template", "### Explanation:", False,
                                       "close: two Explanation blocks restate the answer in new "
                                       "words (under half shared), a third header starts"),
    "boiling-point|greedy + no-repeat 3-gram": ("template", "A:\nB:", False,
                                                "empty options A: to Y:, one per line"),
}
