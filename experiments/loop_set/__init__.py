"""The labelled loop set (``decoding/diagnostics/data/loop_set.jsonl``): how its model texts
were generated (``generate``) and how the detector is scored on it (``python -m
experiments.loop_set``, which prints the table in the README)."""
