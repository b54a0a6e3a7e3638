"""The toy model the tests run on (``decoding.toy``): a tiny random Llama and a locally trained
tokenizer, built in-process, no download."""

from decoding.toy import CORPUS, SPECIALS, tiny_lm, tiny_model, tiny_tokenizer

__all__ = ["CORPUS", "SPECIALS", "tiny_lm", "tiny_model", "tiny_tokenizer"]


def tiny_lora_lm(seed: int = 7):
    """The tiny model (seed 0) with a random LoRA adapter (PEFT, ``init_lora_weights=False``)
    strong enough to change greedy answers: a stand-in for a trained adapter, built in
    milliseconds. Its base is ``tiny_lm()``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from decoding.models import from_model

    torch.manual_seed(seed)
    peft = get_peft_model(tiny_model(), LoraConfig(
        r=8, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
        init_lora_weights=False))
    lm = from_model(peft, tiny_tokenizer(), name="tiny-llama-0")
    lm.adapter = "random-lora"
    return lm
