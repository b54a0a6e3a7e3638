"""Hand-written texts of the labelled loop set: hard negatives and the positives the model
rarely produces on its own (templates with a slot, loops that stop, near-verbatim loops).
Written for Decoding Lab. Each entry: (id, text, label); a label is ``None`` for "no loop" or
``(kind, onset_anchor, stops)`` where the loop starts at the first occurrence of
``onset_anchor`` (``"@N:anchor"`` for the N-th occurrence) and ``stops`` says that readable
text follows the loop."""

from __future__ import annotations

NO = None

CONSTRUCTED: list[tuple[str, str, object]] = [
    # ---------------------------------------------------------------- hard negatives
    ("c-week-plan", "Here is a gentle plan for your first week back. Monday: rest. Tuesday: run "
     "5 km. Wednesday: swim 1 km. Thursday: rest. Friday: run 8 km with two hills. Saturday: a "
     "long bike ride. Sunday: rest and stretch.", NO),
    ("c-recipe-adds", "Warm the oven to 180 degrees. Add the flour. Add the sugar. Add the "
     "butter. Add the eggs. Stir until smooth, pour into the tin and bake for forty minutes.", NO),
    ("c-forecast", "Monday: sunny, 21 degrees.\nTuesday: cloudy, 18 degrees.\nWednesday: light "
     "rain, 15 degrees.\nThursday: showers, 14 degrees.\nFriday: sunny spells, 19 degrees.\n", NO),
    ("c-times-table", "The three times table:\n3 x 1 = 3\n3 x 2 = 6\n3 x 3 = 9\n3 x 4 = 12\n"
     "3 x 5 = 15\n3 x 6 = 18\n", NO),
    ("c-planets", "Mercury is the closest planet to the Sun. Venus is the hottest planet. Earth "
     "is the only planet known to hold life. Mars is the red planet. Jupiter is the largest "
     "planet of all.", NO),
    ("c-speech", "We will rebuild the bridge. We will reopen the school. We will replant the "
     "orchards along the river. And we will do it together, street by street, until the town "
     "is whole again.", NO),
    ("c-river-prose", "The river was low that summer, and the river smelled of warm stone. We "
     "walked along the river every evening, counting the herons, and when the river finally "
     "rose in September we missed the stones we had learned by heart.", NO),
    ("c-harbour-poem", "The tide comes in, the tide goes out,\nthe gulls go wheeling round "
     "about,\nand still the harbour lights burn on.\n\nThe boats come home with silver "
     "loads,\nthe carts go rattling up the roads,\nand still the harbour lights burn on.\n\n"
     "The children sleep, the kettles sing,\nthe bell rings out for everything,\nand still the "
     "harbour lights burn on.", NO),
    ("c-trailing-newlines", "The capital of Peru is Lima.\n\n", NO),
    ("c-many-newlines", "Boil the eggs for nine minutes, then cool them in cold water.\n\n\n\n"
     "\n\n\n\n", NO),
    ("c-trailing-spaces", "Spiders have eight legs and most have eight eyes.    \n  \n  \n  ", NO),
    ("c-faq", "Q: How long does delivery take? A: Three to five working days. Q: Can I return "
     "an item? A: Yes, within thirty days. Q: Do you ship abroad? A: Only within Europe for "
     "now.", NO),
    ("c-table", "| fruit | colour | price |\n| --- | --- | --- |\n| apple | red | 0.40 |\n| "
     "banana | yellow | 0.25 |\n| plum | purple | 0.30 |\n", NO),
    ("c-emphasis", "No, no, no! You cannot park the van there, the fire engines need that lane. "
     "Try the side street behind the bakery instead.", NO),
    ("c-packing-list", "For the weekend you will need:\n- a warm jacket\n- a rain cover\n- two "
     "pairs of socks\n- a torch\n- a water bottle\n- snacks for the trail\n", NO),
    ("c-museums", "The first museum we visited was full of pottery from the islands. The second "
     "museum we visited was full of paintings by local fishermen. The third was closed for "
     "repairs, so we ate ice cream instead.", NO),
    ("c-dialogue", "\"Are you coming?\" asked Rosa.\n\"In a minute,\" said Ben.\n\"You said "
     "that an hour ago.\"\n\"And I meant it then too.\" He grinned and picked up his coat.", NO),
    ("c-study-tips", "1. Keep a fixed study time.\n2. Put your phone in another room.\n3. Take "
     "a short break every forty minutes.\n4. Explain what you learned to someone else.\n5. "
     "Sleep well before an exam.", NO),
    ("c-sound-words", "Tick, tock, went the clock on the wall while we waited. The rain went "
     "drip, drip on the window, and somewhere a dog barked twice.", NO),
    ("c-agenda", "9:00 Registration and coffee.\n9:30 Welcome from the organisers.\n10:00 "
     "First talk: soil and water.\n11:00 Second talk: seeds and storage.\n12:00 Lunch.\n", NO),
    ("c-chorus-once", "Row the boat and row it slow,\nwhere the willow branches grow.\nRow the "
     "boat and row it far,\nfollow home the evening star.", NO),
    ("c-address", "Send the form to the school office, or hand it to the class teacher, or "
     "leave it at the front desk of the library; any of the three is fine.", NO),
    # ---------------------------------------------------------------- positives
    ("c-horror", "The explorers opened the gate and the animals ran out. The animals are all in "
     "horror. The animals are all in terror. The animals are all in fear. The animals are all "
     "in awe. The animals are all in", ("template", "The animals are all in horror", False)),
    ("c-d-headings", "Answer: the water cycle moves water between sea, air and land.\n\n### "
     "D-Zero:\n### D-One:\n### D-Two:\n### D-Three:\n### D-Four:\n### D-Five:\n### D-",
     ("template", "### D-Zero", False)),
    ("c-committee", "The committee will meet on Saturday to finalize the plan. The committee "
     "will meet on Sunday to finalize the plan. The committee will meet on Monday to finalize "
     "the plan. The committee will meet on Tuesday to finalize", ("template", "The committee",
                                                                  False)),
    ("c-instruction-cut", "Paris is the capital of France.\n\n### Instruction:\nWhat is the "
     "capital of France?\n\n### Response:\nParis is the capital of France.\n\n### Instruction:\n"
     "What is the capital of France?\n\n### Response:\nParis is the capital of France.\n\n### "
     "Instruction:\nWhat is the capital of France?\n\n### Resp",
     ("exact", "Paris is the capital of France.", False)),
    ("c-door-stops", "I waited in the hall. I looked at the door. I looked at the door. I "
     "looked at the door. I looked at the door. At last the handle turned, and my sister came "
     "in with two bags of shopping and a wet umbrella, laughing at the weather.",
     ("exact", "I looked at the door", True)),
    ("c-steps-ordinal", "To cook rice, follow these steps. The first step is to wash the rice. "
     "The second step is to wash the rice. The third step is to wash the rice. The fourth step "
     "is to wash the rice. The fifth step is to wash the rice.",
     ("template", "The first step is to wash", False)),
    ("c-numbered-same", "Good habits for sleep:\n1. Keep a regular bedtime.\n2. Keep a regular "
     "bedtime.\n3. Keep a regular bedtime.\n4. Keep a regular bedtime.\n5. Keep a regular "
     "bedtime.\n6. Keep a", ("template", "1. Keep a regular", False)),
    ("c-and-then", "We packed the car and then and then and then and then and then and then "
     "and then and then and then and then", ("exact", "and then", False)),
    ("c-hydrated", "Drink water before you run. Remember to stay hydrated. Remember to stay "
     "hydrated. Remember to stay hydrated and rested. Remember to stay hydrated. Remember to "
     "stay hydrated. Remember to stay hydrated.", ("near", "Remember to stay", False)),
    ("c-tea-stops", "A good cup of tea starts with fresh water. Let it boil, then let it rest "
     "for a moment. Pour it over the leaves. Pour it over the leaves. Pour it over the leaves. "
     "Pour it over the leaves. Pour it over the leaves. Then wait four minutes, add milk if you "
     "like, and enjoy it while it is hot.", ("exact", "Pour it over", True)),
    ("c-explanation-ws", "The opposite of ancient is modern.\n\n### Explanation:\nAncient means "
     "very old, so its opposite is modern.\n### Explanation:\n\nAncient means very old, so its "
     "opposite is modern.\n\n### Explanation:\nAncient means very old, so its opposite is "
     "modern.\n\n\n### Explanation:\nAncient means very old, so its",
     ("exact", "### Explanation", False)),
    ("c-answer-questions", "Let me think about this. What is the answer? What is the real "
     "answer? What is the true answer? What is the final answer? What is the right answer? "
     "What is the", ("template", "What is the answer", False)),
    ("c-no-no", "She shook her head and said no no no no no no no no no no no no no no no no",
     ("exact", "no no", False)),
    ("c-river-near", "The river flows to the sea. The river flows slowly to the sea. The river "
     "flows to the sea. The river flows to the sea. The river flows to the sea again. The river "
     "flows to the sea.", ("near", "The river flows", False)),
    ("c-print-loop", "Here is the code:\nprint(total)\nprint(total)\nprint(total)\n"
     "print(total)\nprint(total)\nprint(total)\nprint(tot", ("exact", "print(total)", False)),
    ("c-garden-mid", "Grandpa's garden was full of surprises. The roses were red and the roses "
     "were red and the roses were red and the roses were red and the roses were red. In the "
     "morning we found a fox asleep under the apple tree, curled up like a cat.",
     ("exact", "The roses were red", True)),
    ("c-colours-template", "Which colour do you like? I like the colour blue. I like the colour "
     "green. I like the colour red. I like the colour pink. I like the colour grey. I like the "
     "colour", ("template", "I like the colour blue", False)),
    ("c-long-cycle", "The council met again. The mayor said the bridge would stay open for "
     "buses, bicycles and people on foot, and that cars would use the ring road from May. The "
     "mayor said the bridge would stay open for buses, bicycles and people on foot, and that "
     "cars would use the ring road from May. The mayor said the bridge would stay open for "
     "buses, bicycles and people on foot, and that cars would use the ring",
     ("exact", "The mayor said", False)),
    ("c-thanks-near", "Thank you for your question. I hope this helps you. I hope this helps "
     "you a lot. I hope this helps you. I hope this helps you. I hope this helps you. I hope "
     "this helps", ("near", "I hope this helps", False)),
    ("c-slots-two", "Sam went to the shop on Monday to buy bread. Sam went to the shop on "
     "Tuesday to buy milk. Sam went to the shop on Wednesday to buy bread. Sam went to the shop "
     "on Thursday to buy milk. Sam went to the shop on Friday to buy bread.",
     ("template", "Sam went to the shop", False)),
    ("c-mid-template-stops", "The test went well overall. The students were all in shock. The "
     "students were all in awe. The students were all in tears. The students were all in "
     "silence. Then the bell rang, the papers were collected, and everyone went out into the "
     "sunshine to compare answers.", ("template", "The students were all in shock", True)),
]
