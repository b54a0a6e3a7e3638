"""Hand-written **dev** texts added after the first test run, of the kinds that run missed and of
the hard negatives that look like them. Written for Decoding Lab.

Their authors knew the one-line descriptions of the test misses (in the project README: a name
repeated three times inside a sentence; list items that copy each other's descriptions under new
titles; "Don't forget ..." lines with long slots; paragraphs alternating under changing headers;
a header-block loop whose blocks share less than half their words), not the test texts. So they
always go to the dev split, whatever the hash of their id says (``build.record``'s ``split``),
and the test split stays what it was. Entries as in ``constructed.CONSTRUCTED``.
"""

from __future__ import annotations

NO = None

CONSTRUCTED_DEV: list[tuple[str, str, object]] = [
    # ---------------------------------------------------------------- a name, three times
    ("d-name-commas", "The new cafe by the pier is called Salt and Honey, Salt and Honey, Salt "
     "and Honey, and it opens every morning at seven with fresh bread and strong coffee.",
     ("exact", "Salt and Honey", True)),
    ("d-name-run-on", "Last summer we stayed at the Harbour View Hotel Harbour View Hotel Harbour "
     "View Hotel. The rooms were small but clean, and breakfast was served on the roof.",
     ("exact", "Harbour View Hotel", True)),
    ("d-name-thanks", "At the opening the mayor thanked Greta Lindqvist, Greta Lindqvist and "
     "Greta Lindqvist for the years of work that went into the new park.",
     ("exact", "Greta Lindqvist", True)),
    ("d-name-twice-ok", "She sang New York, New York at the talent show, and the prize was a "
     "train ticket to the city itself.", NO),
    ("d-place-names-ok", "The team from Bora Bora beat the team from Pago Pago, and the fans "
     "of Bora Bora sang all the way back to the harbour.", NO),
    ("d-very-ok", "It was a very, very, very long day, and by the end of it we were too tired "
     "to cook, so we ordered soup from the place on the corner.", NO),
    # ---------------------------------------------------------------- list items, copied
    ("d-list-copied", "Here are some names for a coffee shop by the sea:\n\n1. **Tide and "
     "Bean**: A warm name that brings together the sound of the waves and the smell of fresh "
     "coffee, perfect for a cosy place by the shore.\n2. **Salt Cup**: A warm name that brings "
     "together the sound of the waves and the smell of fresh coffee, perfect for a cosy place "
     "by the shore.\n3. **Harbour Brew**: A warm name that brings together the sound of the "
     "waves and the smell of fresh coffee, perfect for a cosy place by the shore.\n4. "
     "**Driftwood Roast**: A warm name that brings together",
     ("template", "1. **Tide", False)),
    ("d-list-copied-near", "Walking every day is good for you:\n\n- **Heart health**: Walking "
     "every day helps your heart stay strong and keeps your blood moving well.\n- **Mood**: "
     "Walking every day helps your heart stay strong and keeps your blood moving.\n- "
     "**Sleep**: Walking every day helps your heart stay strong and keeps your blood moving "
     "well at night.\n- **Weight**: Walking every day helps your heart stay strong and keeps",
     ("template", "- **Heart health**", False)),
    ("d-list-copied-long", "Try one of these breakfasts before a run:\n\n1. **Oat bowl with "
     "banana and honey** - slow energy from whole grains, a little protein from milk and a "
     "touch of sugar to start the day.\n2. **Toast with peanut butter and sliced apple** - slow "
     "energy from whole grains, a little protein from milk and a touch of sugar to start the "
     "day.\n3. **Yoghurt with berries, seeds and a spoon of jam** - slow energy from whole "
     "grains, a little protein from milk and a touch of sugar to start the day.\n4. **Rice "
     "pudding with cinnamon** - slow energy",
     ("template", "1. **Oat bowl", False)),
    ("d-list-framed-ok", "Three names you could try:\n\n1. **Tide and Bean**: it joins the "
     "sea and the coffee in one short phrase.\n2. **Salt Cup**: short, easy to say, and it "
     "fits on a small sign.\n3. **Harbour Brew**: it tells people where you are before they "
     "walk in.\n", NO),
    ("d-benefits-ok", "Benefits of walking every day:\n\n- **Heart**: it lowers blood pressure "
     "over a few months.\n- **Mood**: a short walk outside eases stress.\n- **Sleep**: people "
     "who walk fall asleep sooner.\n- **Joints**: gentle movement keeps knees and hips "
     "supple.\n", NO),
    # ---------------------------------------------------------------- "Don't forget" lines
    ("d-dont-forget", "Before you set off, check the weather.\nDon't forget to pack the water "
     "bottle, the water bottle and the snacks for the long walk up the hill.\nDon't forget to "
     "pack the rain jacket, the rain jacket and the map for the long walk up the hill.\nDon't "
     "forget to pack the torch, the torch and the first aid kit for the long walk up the "
     "hill.\nDon't forget to pack the sun hat, the sun hat and",
     ("template", "Don't forget to pack the water", False)),
    ("d-dont-forget-long", "Packing for the beach is easy.\nDon't forget the big striped "
     "umbrella from the garage, the big striped umbrella from the garage, and the cool box.\n"
     "Don't forget the blue towels that hang in the upstairs bathroom, the blue towels that hang "
     "in the upstairs bathroom, and the cool box.\nDon't forget the sun cream your sister "
     "bought last week, the sun cream your sister bought last week, and the cool box.\nDon't "
     "forget the old football with the torn stitching, the old football",
     ("template", "Don't forget the big", False)),
    ("d-reminders-ok", "A few reminders for the trip:\nDon't forget your passport.\nCharge "
     "your phone the night before.\nDon't forget to water the plants.\nLeave a key with the "
     "neighbours.\n", NO),
    # ---------------------------------------------------------------- alternating under headers
    ("d-output-alternate", "Summarize: The town pool reopens on Monday after a year of "
     "repairs.\n\n### Output:\nThe town pool reopens on Monday.\n\n### Explanation:\nThe "
     "summary keeps the main fact and drops the details.\n\n### Output:\nThe town pool reopens "
     "on Monday.\n\n### Explanation:\nThe summary keeps the main fact and drops the "
     "details.\n\n### Response:\nThe town pool reopens on Monday.\n\n### Note:\nThe summary "
     "keeps the main fact and drops the details.\n\n### Output:\nThe town pool",
     ("near", "### Output:", False)),
    ("d-two-recipes-ok", "Here are two quick soups.\n\n### Ingredients:\n2 carrots, 1 onion, "
     "a litre of stock.\n\n### Method:\nChop everything, simmer for twenty minutes and "
     "blend.\n\n### Ingredients:\n3 tomatoes, a clove of garlic, a handful of basil.\n\n### "
     "Method:\nRoast the tomatoes with the garlic, then blend with the basil and a little "
     "water.\n", NO),
    # ---------------------------------------------------------------- header blocks, loosely alike
    ("d-blocks-loose", "The boiling point of water at sea level is 100 degrees Celsius.\n\n### "
     "Explanation:\nWater boils at 100 degrees Celsius at sea level because the air pressure "
     "there is one atmosphere.\n\n### Explanation:\nAt sea level the pressure of the air is one "
     "atmosphere, so water boils when it reaches 100 degrees.\n\n### Explanation:\nThe boiling "
     "point depends on the air pressure, which is one atmosphere at sea level, so water boils "
     "at 100 degrees there.\n\n### Explanation:\nWater reaches its boiling point of 100 "
     "degrees at",
     ("template", "### Explanation:\nWater boils", False)),
    ("d-faq-long-ok", "Q: How do I reset my password?\nA: Open the settings page and choose "
     "\"Forgot password\"; we send a link to your email.\nQ: How long is the link valid?\nA: "
     "For one hour, after which you can ask for a new one.\nQ: What if the email never "
     "arrives?\nA: Check the spam folder first, then write to our help desk.\n", NO),
    ("d-steps-ok", "### Step 1:\nCut the paper into a square of twenty centimetres.\n\n### "
     "Step 2:\nFold it in half from corner to corner and open it again.\n\n### Step 3:\nFold "
     "the two lower edges to the middle line to make a kite.\n\n### Step 4:\nTurn it over and "
     "fold the tip down to finish the nose of the plane.\n", NO),
]
