"""The toy model the tests run on (``decoding.toy``): a tiny random Llama and a locally trained
tokenizer, built in-process, no download."""

from decoding.toy import CORPUS, SPECIALS, tiny_lm, tiny_model, tiny_tokenizer

__all__ = ["CORPUS", "SPECIALS", "tiny_lm", "tiny_model", "tiny_tokenizer"]
