"""Interactive generation beside a background training run (issue 17, item 7).

    .venv/bin/python -m app.bench_background [--tokens 64] [--tries 3] [--epochs 3]

Measures the step inspector's generation speed (greedy, ``--tokens`` new tokens, the lab's own
traced ``generate`` on the embedded model) three ways, ``--tries`` times each (median):

- **alone**: nothing else running;
- **beside a budgeted run**: while ``declab train`` runs as the Train page starts it
  (``train_runs.launch``: the ``app.background`` budget, half the cores' threads, passive
  OpenMP waiting, niceness +10);
- **beside an unbudgeted run**: the same run with every core's threads, spinning OpenMP waits
  and no niceness (what the lab did before the budget).

The goal: beside a budgeted run, at least half the quiet speed (ratio >= 0.5). Generation
starts once the run has begun training (its progress log's ``begin`` record), and the run is
stopped afterwards. Results: printed, and written to ``runs/bench-background/<time>.json``.
Run it on a quiet machine: other processes change every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from alignment.train import TrainConfig
from app import background, train_runs
from decoding import DecodingConfig, generate, load_model

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "runs" / "bench-background"
PROMPT = "Write one sentence about the sea."
GOAL_RATIO = 0.5


def tokens_per_second(lm, tokens: int, tries: int) -> list[float]:
    """Greedy, exactly ``tokens`` new tokens, traced as the step inspector does; one rate per try."""
    config = DecodingConfig(max_new_tokens=tokens, min_new_tokens=tokens)
    rates = []
    for _ in range(tries):
        started = time.perf_counter()
        generation = generate(lm, PROMPT, config, trace=True, trace_top=20)
        rates.append(len(generation.token_ids) / (time.perf_counter() - started))
    return rates


def wait_for_training(job: train_runs.TrainJob, process, timeout: float) -> bool:
    """Until the run's progress log has its ``begin`` record (the model is loaded and training
    started); False when it exited or the time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        begin, _, _ = train_runs.read_progress(job.progress_path)
        if begin is not None:
            return True
        time.sleep(0.5)
    return False


def beside_run(lm, config: TrainConfig, budget: background.JobBudget | None, tokens: int, tries: int,
               jobs_dir: Path, command: Callable[[train_runs.TrainJob], list[str]] | None = None,
               start_timeout: float = 600.0) -> dict:
    """Rates while a training run goes: ``budget`` None runs it unbudgeted (all threads, spinning
    waits, no niceness)."""
    name = f"bench-{'budgeted' if budget else 'unbudgeted'}-{time.strftime('%H%M%S')}"
    job = train_runs.new_job(name, config, adapters_dir=jobs_dir / "adapters", jobs_dir=jobs_dir)
    if command is not None:
        job.command = command(job)
    # Unbudgeted, as the lab started runs before: every core's threads, the OpenMP runtime's
    # own wait policy (spinning), no niceness.
    unbudgeted = background.JobBudget(threads=os.cpu_count() or 1, nice=0, wait_policy=None)
    process = train_runs.launch(job, budget or unbudgeted)
    try:
        started = wait_for_training(job, process, start_timeout)
        rates = tokens_per_second(lm, tokens, tries) if started else []
    finally:
        train_runs.stop(job, process)
        process.wait(timeout=60)
    return {"job": job.name, "started_training": started, "budget": job.budget, "rates": rates,
            "median": statistics.median(rates) if rates else None}


def run(lm, tokens: int, tries: int, config: TrainConfig, jobs_dir: Path,
        command: Callable[[train_runs.TrainJob], list[str]] | None = None,
        start_timeout: float = 600.0) -> dict:
    alone = tokens_per_second(lm, tokens, tries)
    budgeted = beside_run(lm, config, background.job_budget(), tokens, tries, jobs_dir, command,
                          start_timeout)
    unbudgeted = beside_run(lm, config, None, tokens, tries, jobs_dir, command, start_timeout)
    quiet = statistics.median(alone)
    result = {"model": lm.name, "tokens": tokens, "tries": tries, "cpus": os.cpu_count(),
              "alone": {"rates": alone, "median": quiet},
              "beside_budgeted": budgeted, "beside_unbudgeted": unbudgeted, "goal_ratio": GOAL_RATIO}
    for key in ("beside_budgeted", "beside_unbudgeted"):
        median = result[key]["median"]
        result[key]["ratio"] = None if median is None else median / quiet
    return result


def report(result: dict) -> str:
    lines = [f"{result['model']}, {result['tokens']} tokens, median of {result['tries']} "
             f"({result['cpus']} CPUs)", f"  alone               {result['alone']['median']:.1f} tok/s"]
    for key, label in (("beside_budgeted", "beside budgeted run"), ("beside_unbudgeted", "beside unbudgeted")):
        part = result[key]
        if part["median"] is None:
            lines.append(f"  {label:<20}(the run did not start training)")
        else:
            lines.append(f"  {label:<20}{part['median']:.1f} tok/s  ratio {part['ratio']:.2f}")
    ok = (result["beside_budgeted"]["ratio"] or 0) >= GOAL_RATIO
    lines.append(f"  goal: budgeted ratio >= {GOAL_RATIO}: {'met' if ok else 'NOT met'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="of the background run (long enough "
                        "to outlast the measurement; it is stopped afterwards)")
    args = parser.parse_args(argv)
    lm = load_model()
    with tempfile.TemporaryDirectory(prefix="bench-background-") as tmp:
        result = run(lm, args.tokens, args.tries, TrainConfig(epochs=args.epochs), Path(tmp))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(report(result))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
