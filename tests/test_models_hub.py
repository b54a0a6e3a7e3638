"""A hub id when the hub cannot be reached: a prompt error, not ~48 s of retries (issue 17)."""

from __future__ import annotations

import socket

import pytest
import torch

from decoding import models
from decoding.errors import ModelLoadError


def test_an_uncached_hub_id_offline_fails_at_once_without_asking_the_hub(monkeypatch):
    import transformers

    asked = []

    def refuse(*args, **kwargs):
        if not kwargs.get("local_files_only"):
            asked.append(args)
            raise AssertionError("the hub was asked")
        raise OSError("not in the cache")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=None: False)
    with pytest.raises(ModelLoadError, match=r"model='some-org/some-model' is not in the local Hugging "
                                             r"Face cache and the hub \(.*\) cannot be reached"):
        models._load_transformers("some-org/some-model", torch.float32)
    assert asked == []


def test_a_cached_hub_id_loads_without_the_network(monkeypatch):
    monkeypatch.setattr(models, "_load_cached", lambda source, dtype: ("model", "tokenizer"))
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=None: pytest.fail("probed the hub"))
    assert models._load_transformers("some-org/some-model", torch.float32) == ("model", "tokenizer")


def test_hub_reachable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not models.hub_reachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        assert models.hub_reachable(timeout=2)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")     # closed now: refused
    assert not models.hub_reachable(timeout=2)
