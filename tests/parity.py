"""The reference side of parity tests: transformers' own generate() with the same settings."""

from __future__ import annotations

import torch

from decoding import DecodingConfig


def reference(lm, prompt_ids, config: DecodingConfig) -> list[list[int]]:
    """transformers' generate() with the same settings, EOS-padded tails stripped."""
    kw = dict(max_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
              repetition_penalty=config.repetition_penalty,
              no_repeat_ngram_size=config.no_repeat_ngram_size,
              num_return_sequences=config.num_return_sequences)
    if config.strategy == "sample":
        kw.update(do_sample=True, temperature=config.temperature, top_k=config.top_k,
                  top_p=config.top_p, min_p=config.min_p, typical_p=config.typical_p,
                  epsilon_cutoff=config.epsilon_cutoff, eta_cutoff=config.eta_cutoff)
    elif config.strategy == "beam":
        kw.update(do_sample=False, num_beams=config.num_beams, length_penalty=config.length_penalty,
                  early_stopping=config.early_stopping)
    else:
        kw.update(do_sample=False)
    torch.manual_seed(config.seed)
    out = lm.model.generate(torch.tensor([prompt_ids]), **kw)
    eos = set(lm.eos_token_ids)
    rows = []
    for row in out[:, len(prompt_ids):].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), None)
        rows.append(row if cut is None else row[:cut + 1])
    return rows
