"""A toy model: a tiny random Llama and a locally trained byte-level BPE tokenizer, built
in-process in about a second, no download. The tests run on it, and so does the lab when
``DECLAB_TINY_MODEL`` asks for it (its own tests drive it that way)."""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "The cat sat on the mat and looked at the door.",
    "A unicorn lived in a remote valley in the Andes mountains.",
    "Live-action adaptations of anime can bring new audiences to old stories.",
    "Greedy decoding picks the most likely token at every step.",
    "Sampling draws the next token from the whole distribution.",
    "Beam search keeps several hypotheses and extends the best ones.",
    "### Instruction: answer the question. ### Response: the answer is four.",
    "What is the capital of France? The capital of France is Paris.",
]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@functools.lru_cache(maxsize=None)
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="<|im_end|>",
                                  pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_model(seed: int = 0, layers: int = 2, hidden: int = 64, max_positions: int = 256) -> LlamaForCausalLM:
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=max_positions, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True))
    # Sharpen the random logits so that greedy/beam choices are not near-ties.
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(3.0)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.eval()
    return model


def tiny_lm(seed: int = 0, **kwargs):
    from .models import from_model

    return from_model(tiny_model(seed, **kwargs), tiny_tokenizer(), name=f"tiny-llama-{seed}")
