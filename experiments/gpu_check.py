"""``make gpu-check``: the CUDA / bfloat16 / 4-bit paths on one GPU, in a few minutes, no download.

Every model is built in-process from a config with random weights (seeded), so the check needs
nothing beyond the tree and a GPU:

1. **bf16 parity**: a randomly initialised ~1B-parameter Llama (TinyLlama-1.1B's shape: 22
   layers, hidden 2048, 32 query / 4 key-value heads, vocabulary 32000) in bfloat16; greedy
   tokens of our loop against transformers' ``generate()`` (``min_new_tokens`` = ``max_new_tokens``
   so both run the full length), token for token.
2. **tokens/s**: the same greedy generation, ours against ``generate()``, median of a few runs
   after a warm-up (``torch.cuda.synchronize`` around each).
3. **DPO in bf16**: ``alignment.train.train`` (TRL's DPO, LoRA r=8) with bfloat16 autocast on a
   float32 copy of the model. The first step's loss must be ln 2 (policy = reference while LoRA's
   B is zero, Rafailov et al. 2023 eq. 7 at zero margin); a short run must keep every loss finite
   and write an adapter that loads.
4. **4-bit**: where ``bitsandbytes`` imports, the model saved and reloaded through
   ``decoding.models.load_model_4bit`` (NF4, bf16 compute), its memory footprint, and a greedy
   generation through our loop.

It prints one table (check, result, detail) and exits 0 when every check that ran passed, 1 when
one failed, 2 on bad input or without a CUDA GPU (``--device cpu --tiny`` runs the same code on a
tiny model on a CPU, which is what the test suite does; its speeds mean nothing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from alignment.train import TrainConfig, train
from decoding import DecodingConfig, fastpath, generate_ids
from decoding.errors import DecodingLabError, check_range
from decoding.models import LM, attach_adapter, from_model, load_model_4bit
from decoding.toy import tiny_tokenizer

NO_GPU_EXIT = 2
# TinyLlama-1.1B's shape (Zhang et al. 2024): 1.1e9 parameters with untied embeddings
LLAMA_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048,
                tie_word_embeddings=False)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512, max_position_embeddings=256, tie_word_embeddings=True)
# DPO's first loss is -log sigmoid(0) = ln 2 up to the bf16 rounding of two forward passes (the
# reference pass and the policy's): 0.05 allows a 1-nat log-ratio difference at beta = 0.1
FIRST_LOSS_TOLERANCE = 0.05
PROMPT = "A unicorn lived in a remote valley in the Andes mountains."


@dataclass
class Row:
    check: str
    result: str          # "pass", "FAIL", "info" or "skipped"
    detail: str

    @property
    def failed(self) -> bool:
        return self.result == "FAIL"


def llama_config(tiny: bool):
    from transformers import LlamaConfig

    tok = tiny_tokenizer()
    return LlamaConfig(**(TINY if tiny else LLAMA_1B), bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def parameter_count(config) -> int:
    """Parameters of a Llama built from ``config``, counted on the meta device (no memory)."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in LlamaForCausalLM(config).parameters())


def random_llama(config, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A Llama with random weights, built directly on ``device``. The embeddings are scaled up
    (as in ``decoding.toy``) so that greedy choices are not near-ties of almost uniform logits."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(3.0)
    model.to(dtype)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(lm: LM, ids: list[int], tokens: int) -> tuple[list[int], float]:
    config = DecodingConfig(strategy="greedy", max_new_tokens=tokens, min_new_tokens=tokens)
    _sync(lm.device)
    start = time.perf_counter()
    out = generate_ids(lm, ids, config, trace=False).sequences[0].token_ids
    _sync(lm.device)
    return out, time.perf_counter() - start


def reference(lm: LM, ids: list[int], tokens: int) -> tuple[list[int], float]:
    _sync(lm.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(torch.tensor([ids], device=lm.device), do_sample=False,
                                max_new_tokens=tokens, min_new_tokens=tokens)
    _sync(lm.device)
    return out[0, len(ids):].tolist(), time.perf_counter() - start


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y),
                None if len(a) == len(b) else min(len(a), len(b)))


def fast_path_row(model) -> Row:
    """Whether our loop runs on the fast path (``decoding/fastpath.py``) for this model and
    device, or its first-use self-check sent it back to transformers' forward (then the parity
    above compares transformers with itself, and our speed is transformers')."""
    reason = fastpath.unsupported_reason(model)
    if reason is not None:
        return Row("fast path", "info", f"not used: {reason}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = fastpath.fast_model(model)
    if fast is None:
        return Row("fast path", "info", "self-check differed from transformers' forward on this device: "
                   "our loop runs through transformers' forward")
    dropped = any("row-split" in str(w.message) for w in caught)
    return Row("fast path", "info", "active (self-check bit-identical)" +
               ("; row-split products dropped" if dropped else ""))


def check_generation(lm: LM, tokens: int, repeats: int) -> list[Row]:
    ids = lm.encode(PROMPT, chat=False)
    path = fast_path_row(lm.model)
    ours(lm, ids, 4), reference(lm, ids, 4)              # warm-up: kernels
    mine, theirs = ours(lm, ids, tokens)[0], reference(lm, ids, tokens)[0]
    diff = first_difference(mine, theirs)
    parity = Row("bf16 greedy parity vs generate()", "pass" if diff is None else "FAIL",
                 f"{len(mine)} tokens identical" if diff is None else
                 f"first difference at token {diff} of {tokens}: ours {mine[diff:diff + 3]}, "
                 f"generate() {theirs[diff:diff + 3]}")
    rates = {"ours": [], "generate()": []}
    for _ in range(repeats):
        rates["ours"].append(tokens / ours(lm, ids, tokens)[1])
        rates["generate()"].append(tokens / reference(lm, ids, tokens)[1])
    mine_tps, theirs_tps = (statistics.median(rates[k]) for k in ("ours", "generate()"))
    speed = Row("greedy tokens/s, batch 1", "info",
                f"ours {mine_tps:.1f}, generate() {theirs_tps:.1f}, ratio {mine_tps / theirs_tps:.2f} "
                f"(median of {repeats}, {tokens} tokens)")
    return [path, parity, speed]


def preference_pairs(path: Path, count: int = 8) -> Path:
    records = [{"id": i, "prompt": f"Is idea {i} worth trying?", "support": f"Yes, idea {i} is worth it.",
                "oppose": f"No, idea {i} is not worth it."} for i in range(count)]
    path.write_text(json.dumps(records))
    return path


def check_dpo(model, tokenizer, device: torch.device, work: Path) -> list[Row]:
    """A short DPO run in bf16 autocast on a float32 copy of ``model``: 8 pairs, batch 2, 1 epoch."""
    lm = from_model(model, tokenizer, name="random-llama")
    config = TrainConfig(method="dpo", dataset=str(preference_pairs(work / "pairs.json")), epochs=1,
                         batch_size=2, learning_rate=1e-4, max_length=64, precision="bf16",
                         device=device.type, threads="default", chat=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = train(config, work / "adapter", model=lm, progress=False)
    elapsed = time.perf_counter() - start
    losses = [e["loss"] for e in result.log_history if "loss" in e and "train_runtime" not in e]
    first = losses[0] if losses else float("nan")
    step = Row("DPO first step (bf16)", "pass" if abs(first - math.log(2)) < FIRST_LOSS_TOLERANCE else "FAIL",
               f"loss {first:.4f}, expected ln 2 = {math.log(2):.4f} +- {FIRST_LOSS_TOLERANCE} "
               "(policy = reference at step 1)")
    peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    try:
        adapted = attach_adapter(lm, str(result.out_dir))   # train() left ``lm`` untouched: the base
        loads = adapted.adapter is not None
    except DecodingLabError as exc:
        loads = False
        peak += f"; the adapter does not load: {exc}"
    run = Row("DPO short run (bf16)", "pass" if finite and loads else "FAIL",
              f"{result.meta['steps']} steps in {elapsed:.1f} s, losses {', '.join(f'{x:.4f}' for x in losses)}"
              f"{peak}")
    return [step, run]


def check_4bit(model, tokenizer, device: torch.device, work: Path, tokens: int) -> Row:
    if device.type != "cuda":
        return Row("4-bit NF4 load + greedy", "skipped", "needs a CUDA GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        return Row("4-bit NF4 load + greedy", "skipped", "bitsandbytes not importable (pip install -e '.[gpu]')")
    model.save_pretrained(work / "base")
    tokenizer.save_pretrained(work / "base")
    lm = load_model_4bit(str(work / "base"))
    footprint = lm.model.get_memory_footprint() / 2**30
    out, elapsed = ours(lm, lm.encode(PROMPT, chat=False), tokens)
    ok = len(out) == tokens
    return Row("4-bit NF4 load + greedy", "pass" if ok else "FAIL",
               f"footprint {footprint:.2f} GiB, {len(out)} tokens through our loop at {tokens / elapsed:.1f} tok/s")


def format_table(rows: list[Row], header: str) -> str:
    widths = [max(len(getattr(r, k)) for r in rows + [Row("check", "result", "detail")])
              for k in ("check", "result")]
    lines = [header, f"{'check':<{widths[0]}}  {'result':<{widths[1]}}  detail",
             f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 6}"]
    lines += [f"{r.check:<{widths[0]}}  {r.result:<{widths[1]}}  {r.detail}" for r in rows]
    return "\n".join(lines)


def run_checks(device: torch.device, tiny: bool, tokens: int, repeats: int) -> list[Row]:
    config = llama_config(tiny)
    tokenizer = tiny_tokenizer()   # ids beyond its 320 tokens decode to nothing; the checks use ids
    count = parameter_count(config)
    size = f"{count / 1e9:.2f} B" if count >= 1e8 else f"{count / 1e6:.2f} M"
    rows = [Row("model", "info", f"random Llama, {size} parameters, "
                f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, on {device}"
                + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))]
    model = random_llama(config, device, torch.bfloat16)
    rows += check_generation(from_model(model, tokenizer, name="random-llama"), tokens, repeats)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        rows.append(check_4bit(model, tokenizer, device, work, min(tokens, 32)))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        train_model = random_llama(config, device, torch.float32)
        rows += check_dpo(train_model, tokenizer, device, work)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (the check) or cpu (exercise the code; with --tiny)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer, hidden-64 Llama instead of ~1B parameters")
    p.add_argument("--tokens", type=int, default=128, help="greedy tokens per generation (1-1024)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side for tokens/s (1-20)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_range("tokens", args.tokens, 1, 1024, integer=True)
        check_range("repeats", args.repeats, 1, 20, integer=True)
    except DecodingLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU and none is visible here (torch.cuda.is_available() is "
              f"False; torch {torch.__version__}, CUDA build {torch.version.cuda}). Nothing was run. "
              "`python -m experiments.gpu_check --device cpu --tiny` runs the same code on a tiny "
              "model on the CPU.", file=sys.stderr)
        return NO_GPU_EXIT
    device = torch.device(args.device)
    rows = run_checks(device, args.tiny, args.tokens, args.repeats)
    print(format_table(rows, f"gpu-check: torch {torch.__version__}, device {device}"
                             f"{', tiny model' if args.tiny else ''}"))
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
