"""``declab generate``: generation from the terminal, with the per-token view."""

from __future__ import annotations

import argparse

from decoding import DecodingConfig, generate, load_model
from decoding.engines import ENGINES, VllmSettings, generate_vllm, sampling_params
from decoding.errors import ConfigError
from decoding.io import write_text_atomic
from decoding.speculative import answer_distributions, speculative_view, view_lines
from decoding.trace import Generation

from .cli_common import add_dataclass_arguments, dataclass_from_args

def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="A local transformers directory, a .gguf "
                        "file or a hub id (default: the embedded SmolLM2-135M-Instruct).")
    parser.add_argument("--adapter", default=None, help="A PEFT adapter directory to apply.")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: "
                        "float32 on CPU, bfloat16 on CUDA).")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto).")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, default="ours",
                        help="Who decodes: ours (our loop, with traces) or vllm (vLLM in its own "
                        "environment, make engines: no traces; knobs it cannot express are "
                        "refused).")


def refuse_for_engine(args, **trace_options) -> None:
    """Exit 2 (a ConfigError) when --engine vllm meets an option that needs our loop's traces;
    ``trace_options``: flag name -> whether it was given."""
    if getattr(args, "engine", "ours") != "vllm":
        return
    given = [name for name, on in trace_options.items() if on]
    if given:
        raise ConfigError(f"{given[0]} needs our loop's per-step trace; allowed with --engine vllm: "
                          "no " + ", ".join(trace_options))


def vllm_settings(args) -> VllmSettings:
    """The engine settings the generic model flags imply (vLLM picks its own device)."""
    kwargs = {"logprobs": getattr(args, "logprobs", None),
              "logprobs_mode": getattr(args, "logprobs_mode", "raw_logprobs")}
    if args.dtype:
        kwargs["dtype"] = args.dtype
    return VllmSettings(**kwargs)


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="Generate text and show every step's distribution.",
                              description="Generate a continuation with our own loop, then show "
                              "each token with its probability and the size of the kept set.")
    p.add_argument("prompt", help="The prompt (a user message in chat mode, raw text with --no-chat).")
    add_model_arguments(p)
    p.add_argument("--no-chat", dest="chat", action="store_false",
                   help="Treat the prompt as raw text to continue (no chat template).")
    p.add_argument("--trace-top", type=int, default=None,
                   help="Tokens recorded per stage and step (default 20; our engine only).")
    p.add_argument("--json", action="store_true", help="Print the whole Generation as JSON.")
    p.add_argument("--out", default=None, help="Also write the Generation JSON to this file.")
    p.add_argument("--speculative", action="store_true",
                   help="With --adapter: how speculative decoding with the base drafting for the "
                   "adapter would fare on the first answer (acceptance 1 - TV per step, a seeded "
                   "accept/reject trace, tokens per target forward for drafts of 1-8); in --json "
                   "under 'speculative'.")
    add_engine_arguments(p)
    p.add_argument("--logprobs", type=int, default=None, help="--engine vllm: top "
                   "log-probabilities per step (in --json: sequences[i].logprobs).")
    p.add_argument("--logprobs-mode", default="raw_logprobs",
                   help=VllmSettings.__dataclass_fields__["logprobs_mode"].metadata["help"])
    add_dataclass_arguments(p, DecodingConfig)
    p.set_defaults(func=run_generate)



def per_token_lines(gen: Generation, width: int = 24) -> list[str]:
    """The compact per-token view: step, token, p(raw), p(final), kept-set size, rank."""
    lines = [f"{'step':>4}  {'token':<{width}} {'p raw':>7} {'p final':>8} {'kept':>6} {'rank':>5}"]
    for s in gen.steps:
        token = repr(s.token_text)[1:-1][:width]
        lines.append(f"{s.step:>4}  {token:<{width}} {s.prob_raw:>7.1%} {s.prob_final:>8.1%} "
                     f"{s.kept_count:>6} {s.rank_raw:>5}")
    return lines


def run_generate(args) -> int:
    config = dataclass_from_args(DecodingConfig, args)
    refuse_for_engine(args, **{"--speculative": args.speculative,
                               "--trace-top": args.trace_top is not None})
    if args.engine == "vllm":
        sampling_params(config)                # refuse what vLLM cannot express, before loading
    elif args.logprobs is not None:
        raise ConfigError(f"--logprobs={args.logprobs} is for --engine vllm; our engine traces "
                          "every step (see --trace-top)")
    lm = load_model(args.model, adapter=args.adapter, dtype=args.dtype, device=args.device)
    if args.engine == "vllm":
        [gen] = generate_vllm(lm, [(args.prompt, config)], chat=args.chat,
                              settings=vllm_settings(args))
    else:
        gen = generate(lm, args.prompt, config, chat=args.chat, trace=True,
                       trace_top=args.trace_top or 20)
    view = None
    if args.speculative:
        p, q = answer_distributions(lm, gen.prompt_ids, gen.token_ids)
        view = speculative_view(p, q, seed=config.seed)
        gen.speculative = view.to_dict()
    if args.out:
        write_text_atomic(args.out, gen.to_json(indent=1))
    if args.json:
        print(gen.to_json())
        return 0
    print(gen.text)
    print()
    for i, seq in enumerate(gen.sequences[1:], start=2):
        print(f"--- sequence {i} (score {seq.score}):\n{seq.text}\n")
    print(f"[{len(gen.token_ids)} tokens, finish: {gen.finish_reason}, chain: "
          f"{' -> '.join(gen.chain)}, {gen.elapsed_s:.1f} s]")
    if gen.steps:
        print("\n".join(per_token_lines(gen)))
    if view is not None:
        print("\n" + "\n".join(view_lines(view)))
    return 0
