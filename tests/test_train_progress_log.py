"""The progressive JSON-lines log of a training run (``train(progress_log=...)``), tiny model."""

from __future__ import annotations

import json

from alignment.train import TrainConfig, train
from tests.tiny import tiny_lm

RECORDS = [{"id": i, "prompt": f"Is topic {i} good?", "support": f"Yes, topic {i} helps.",
            "oppose": f"No, topic {i} hurts."} for i in range(4)]


def test_progress_log_mirrors_log_history(tmp_path):
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(RECORDS))
    config = TrainConfig(dataset=str(data), epochs=1, batch_size=2, learning_rate=1e-2,
                         max_length=64, threads=1)
    log = tmp_path / "logs" / "progress.jsonl"
    result = train(config, tmp_path / "adapter", model=tiny_lm(), progress=False, progress_log=log)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0] == {"event": "begin", "max_steps": 2, "epochs": 1}
    assert lines[-1] == {"event": "end", "step": 2}
    entries = lines[1:-1]
    assert len(entries) == len(result.log_history) == 3     # two steps and the run summary
    for written, kept in zip(entries, result.log_history):
        assert written == json.loads(json.dumps(kept))
    assert [e["step"] for e in entries] == [1, 2, 2] and "rewards/margins" in entries[0]
