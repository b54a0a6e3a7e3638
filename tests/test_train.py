"""Preference training: config validation, the written adapter, atomic output, base checks.

Runs use the tiny in-process Llama (2 optimizer steps each, a few seconds); one short DPO run on
the embedded SmolLM2 checks that a held-out likelihood margin moves the trained way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import alignment.train as train_mod
from alignment.curves import IMPLICIT_REWARD, LOGPROB_REWARD, curve_panels, plot_training_curves
from alignment.data import PreferencePair, load_dataset, load_stance_records, to_chat_rows
from alignment.train import (TrainConfig, check_lengths, completion_only_lm_head, cpu_threads,
                             fastest_thread_count, preference_rows, train)
from decoding.errors import DecodingLabError, ModelLoadError
from decoding.models import ADAPTER_META, attach_adapter, from_model, load_model
from tests.tiny import tiny_lm, tiny_model, tiny_tokenizer

RECORDS = [{"id": i, "prompt": f"Is topic {i} good?", "support": f"Yes, topic {i} helps people.",
            "oppose": f"No, topic {i} hurts people."} for i in range(4)]


def tiny_config(data: Path, method: str = "dpo", **overrides) -> TrainConfig:
    """4 pairs, batch 2, one epoch: 2 optimizer steps on the tiny model."""
    knobs = dict(method=method, dataset=str(data), epochs=1, batch_size=2, learning_rate=1e-2,
                 max_length=64, threads=1)
    knobs.update(overrides)
    return TrainConfig(**knobs)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.json"
    path.write_text(json.dumps(RECORDS))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """One DPO and one ORPO run on the same tiny base (whose weights are recorded before)."""
    lm = tiny_lm()
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    root = tmp_path_factory.mktemp("runs")
    results = {m: train(tiny_config(data, m), root / m, model=lm, progress=False) for m in ("dpo", "orpo")}
    return {"lm": lm, "before": before, "root": root, **results}


# --------------------------------------------------------------------------- config

@pytest.mark.parametrize("knobs, name", [
    ({"method": "ppo"}, "method"), ({"beta": 0.0}, "beta"), ({"beta": -1}, "beta"),
    ({"epochs": 0}, "epochs"), ({"learning_rate": 0}, "learning_rate"), ({"batch_size": 0}, "batch_size"),
    ({"support_ratio": 1.5}, "support_ratio"), ({"data_size": 0}, "data_size"),
    ({"lora_dropout": 1.0}, "lora_dropout"), ({"lora_r": 0}, "lora_r"), ({"target_modules": ()}, "target_modules"),
    ({"report_to": "mlflow"}, "report_to"), ({"device": "tpu"}, "device"), ({"threads": 0}, "threads"),
    ({"load_in_4bit": True, "device": "cpu"}, "load_in_4bit"), ({"max_length": 4}, "max_length"),
    ({"epochs": 1.5}, "epochs"), ({"chat": "yes"}, "chat"),
])
def test_config_refuses_bad_values(knobs, name):
    with pytest.raises(DecodingLabError, match=rf"^{name}=.* is out of range; allowed: "):
        TrainConfig(**knobs)


def test_config_normalises_cli_values_and_serialises():
    config = TrainConfig(target_modules=["q_proj", "v_proj"], threads="2")
    assert config.target_modules == ("q_proj", "v_proj") and config.threads == 2
    data = config.to_dict()
    assert data["target_modules"] == ["q_proj", "v_proj"] and data["method"] == "dpo"
    assert json.loads(json.dumps(data)) == data
    assert TrainConfig(threads=None).threads == "default"


def test_every_field_has_help():
    import dataclasses

    assert all(f.metadata.get("help") for f in dataclasses.fields(TrainConfig))


# --------------------------------------------------------------------------- the written adapter

@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_run_writes_adapter_meta_log_and_curves(runs, method):
    result = runs[method]
    out = runs["root"] / method
    assert result.out_dir == out
    for name in ("adapter_config.json", "adapter_model.safetensors", ADAPTER_META, "log_history.json",
                 "training_curves.png"):
        assert (out / name).is_file(), name
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "log_history.json").read_text()) == result.log_history
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no .partial left


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_lora_weights_moved_and_nothing_else_saved(runs, method):
    weights = load_file(str(runs["root"] / method / "adapter_model.safetensors"))
    assert weights and all("lora_A" in k or "lora_B" in k for k in weights)
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert len(lora_b) == 2 * 4  # 2 layers x q/k/v/o
    assert all(v.abs().max() > 0 for v in lora_b)  # B starts at zero (Hu et al. 2021)


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_base_weights_unchanged(runs, method):
    trained = runs[method].lm.model
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
            for k, v in trained.state_dict().items() if "lora_" not in k}
    assert base.keys() == runs["before"].keys()
    assert all(torch.equal(base[k], runs["before"][k]) for k in base)
    # and the caller's model was not touched at all: same weights, no PEFT layers, no patched forward
    lm = runs["lm"]
    assert all(torch.equal(v, runs["before"][k]) for k, v in lm.model.state_dict().items())
    assert "forward" not in lm.model.__dict__ and not hasattr(lm.model, "peft_config")


def test_meta_records_base_config_dataset_and_metrics(runs, data):
    meta = runs["dpo"].meta
    on_disk = json.loads((runs["root"] / "dpo" / ADAPTER_META).read_text())
    assert on_disk == meta
    assert meta["base_model"] == "tiny-llama-0" and meta["base_fingerprint"] == runs["lm"].fingerprint
    assert meta["method"] == "dpo" and meta["config"] == tiny_config(data).to_dict()
    assert meta["dataset"]["sha256"] == load_dataset(str(data)).sha256
    assert meta["dataset"]["pairs"] == 4 and meta["dataset"]["support_ratio"] == 1.0
    assert meta["steps"] == 2 and meta["seed"] == 0 and meta["threads"] == 1
    assert {"loss", "rewards/margins", "rewards/accuracies", "train_loss"} <= meta["final_metrics"].keys()
    assert {"torch", "transformers", "trl", "peft"} <= meta["versions"].keys()
    assert meta["reward_semantics"] == IMPLICIT_REWARD
    assert runs["orpo"].meta["reward_semantics"] == LOGPROB_REWARD
    assert meta["tokens"]["truncated_sequences"] == 0 and meta["wall_time_s"] > 0


def test_dpo_first_step_is_ln2(runs):
    """At step 1 the policy equals the reference (LoRA B = 0), so the DPO loss is ln 2 exactly."""
    first = next(e for e in runs["dpo"].log_history if "loss" in e)
    assert first["loss"] == pytest.approx(0.693147, abs=1e-5)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)


# --------------------------------------------------------------------------- loading the adapter

def test_adapter_attaches_to_its_base_and_changes_the_logits(runs):
    out = runs["root"] / "dpo"
    base = from_model(tiny_model(0), tiny_tokenizer(), name="tiny-llama-0")
    ids = torch.tensor([tiny_tokenizer()("Is topic 1 good?")["input_ids"]])
    with torch.no_grad():
        plain = base.model(ids).logits
        attached = attach_adapter(base, str(out))
        adapted = attached.model(ids).logits
        trained = runs["dpo"].lm.model(ids).logits
    assert attached.adapter == str(out)
    assert torch.allclose(adapted, trained, atol=1e-5)
    assert not torch.allclose(adapted, plain, atol=1e-4)


def test_adapter_refused_on_another_base(runs):
    other = from_model(tiny_model(1), tiny_tokenizer(), name="tiny-llama-1")
    with pytest.raises(ModelLoadError, match="fingerprint"):
        attach_adapter(other, str(runs["root"] / "dpo"))


# --------------------------------------------------------------------------- output directory

def test_existing_out_dir_is_refused_before_any_work(tmp_path, data, monkeypatch):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    monkeypatch.setattr(train_mod, "_training_copy", lambda *a: pytest.fail("loaded a model"))
    with pytest.raises(DecodingLabError, match=r"already exists.*overwrite"):
        train(tiny_config(data), out, model=tiny_lm(), progress=False)
    assert (out / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_the_old_directory(tmp_path, data):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "old.txt").write_text("old")
    train(tiny_config(data, "simpo"), out, model=tiny_lm(), overwrite=True, progress=False)
    assert not (out / "old.txt").exists() and (out / ADAPTER_META).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no .old / .partial left


def test_interrupted_run_leaves_no_directory(tmp_path, data, monkeypatch):
    real_build = train_mod.build_trainer

    def build_then_fail(*args, **kwargs):
        trainer = real_build(*args, **kwargs)

        def interrupted():
            (Path(trainer.args.output_dir) / "half-written.bin").write_bytes(b"x")
            raise KeyboardInterrupt  # like Ctrl-C half-way through training
        trainer.train = interrupted
        return trainer

    monkeypatch.setattr(train_mod, "build_trainer", build_then_fail)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(data), tmp_path / "adapter", model=tiny_lm(), progress=False)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the other methods

def test_ipo_logs_the_ipo_loss(tmp_path, data):
    """IPO at step 1: (Δ̄ − 1/(2β))² with Δ̄ = 0, so 25 for β = 0.1 (TRL dpo_trainer.py ipo branch)."""
    result = train(tiny_config(data, "ipo", beta=0.1), tmp_path / "ipo", model=tiny_lm(), progress=False)
    first = next(e for e in result.log_history if "loss" in e)
    assert first["loss"] == pytest.approx(25.0, rel=1e-4)
    assert result.meta["config"]["method"] == "ipo"


def test_simpo_logs_length_normalised_rewards(tmp_path, data):
    result = train(tiny_config(data, "simpo", beta=2.0), tmp_path / "simpo", model=tiny_lm(), progress=False)
    first = next(e for e in result.log_history if "loss" in e)
    # SimPO's "reward" is beta x mean token log-prob: about -2 x ln(vocab 320) for a random model
    assert -2.0 * 7.0 < first["rewards/chosen"] < -2.0 * 4.0
    assert result.meta["reward_semantics"] == LOGPROB_REWARD


def test_four_bit_needs_cuda(tmp_path, data):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DecodingLabError, match="load_in_4bit=True .*CUDA"):
        train(TrainConfig(dataset=str(data), load_in_4bit=True), tmp_path / "q", progress=False)
    with pytest.raises(DecodingLabError, match="load_in_4bit"):
        train(TrainConfig(dataset=str(data), load_in_4bit=True), tmp_path / "q", model=tiny_lm())
    assert not (tmp_path / "q").exists()


def test_prompt_longer_than_max_length_is_refused(tmp_path, data):
    with pytest.raises(DecodingLabError, match=r"max_length=12 is out of range; allowed: max_length > "):
        train(tiny_config(data, max_length=12), tmp_path / "a", model=tiny_lm(), progress=False)
    assert not (tmp_path / "a").exists()


def test_malformed_dataset_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 1, "prompt": "x", "support": "y"}]')
    with pytest.raises(DecodingLabError, match="oppose"):
        train(TrainConfig(dataset=str(bad)), tmp_path / "a", model=tiny_lm(), progress=False)


# --------------------------------------------------------------------------- helpers

def test_check_lengths_counts_truncated_sequences():
    info = check_lengths([(10, 30, 50), (12, 20, 25)], max_length=40)
    assert info == {"longest_prompt": 12, "longest_sequence": 50, "truncated_sequences": 1, "max_length": 40}


def test_raw_rows_join_prompt_and_answer_with_a_space():
    dataset = load_dataset("stance", data_size=2)
    rows = preference_rows(dataset, tiny_tokenizer(), chat=False)
    assert rows[0]["prompt"] == dataset.pairs[0].prompt
    assert rows[0]["chosen"] == " " + dataset.pairs[0].chosen
    chat_rows = preference_rows(dataset, tiny_tokenizer(), chat=True)
    assert chat_rows[0]["chosen"].endswith("<|im_end|>")


def test_completion_only_lm_head_gives_the_same_log_probs():
    """TRL's fused head scoring only labelled positions (our CPU patch) equals scoring them all."""
    from trl.trainer.utils import add_fused_lm_head

    model = tiny_model(0)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    ids = torch.randint(0, 300, (3, 17), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :9] = -100  # a "prompt" of 9 tokens
    labels[2, 14:] = -100  # and padding at the end of one row
    with torch.no_grad():
        every = model(input_ids=ids, labels=labels, fused_lm_head=True)
        with completion_only_lm_head(torch.device("cpu")):
            compact = model(input_ids=ids, labels=labels, fused_lm_head=True)
    for name in ("log_probs", "entropy", "mean_logits"):
        assert torch.allclose(getattr(every, name), getattr(compact, name), atol=1e-5), name
    assert torch.equal(every.is_top1, compact.is_top1)
    import trl.trainer.utils as trl_utils
    assert trl_utils._use_triton(torch.device("cpu")) is False  # restored


@pytest.mark.filterwarnings("ignore::FutureWarning")  # built outside train()'s warning filter
@pytest.mark.parametrize("method", ["orpo", "simpo"])
def test_fused_forward_matches_trl_loss_metrics_and_gradients(tmp_path, data, method):
    """Our ORPO/SimPO forward (TRL's fused LM head, no full logits) against TRL's own
    ``concatenated_forward`` on one batch, with a non-zero adapter: same loss, same metrics
    (except ``logits/*``, which we average over scored positions only), same LoRA gradients."""
    lm = tiny_lm()
    rows = preference_rows(load_dataset(str(data)), lm.tokenizer, chat=True)
    trainer = train_mod.build_trainer(tiny_config(data, method, batch_size=4), lm, rows,
                                      train_mod.sequence_lengths(rows, lm.tokenizer), tmp_path,
                                      torch.device("cpu"), progress=False)
    model = trainer.model
    torch.manual_seed(0)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name, param in lora.items():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    batch = next(iter(trainer.get_train_dataloader()))

    def loss_metrics_grads(forward):
        type(trainer).concatenated_forward = forward
        model.zero_grad()
        loss, metrics = trainer.get_batch_loss_metrics(model, batch)
        loss.backward()
        return loss.item(), metrics, {n: p.grad.clone() for n, p in lora.items()}

    fused = type(trainer).concatenated_forward
    base = type(trainer).__mro__[1]
    try:
        ours = loss_metrics_grads(fused)
        with completion_only_lm_head(torch.device("cpu")):
            compact = loss_metrics_grads(fused)
        theirs = loss_metrics_grads(base.concatenated_forward)
    finally:
        type(trainer).concatenated_forward = fused
    assert ours[0] == pytest.approx(theirs[0], rel=1e-5) == compact[0]
    for key, value in theirs[1].items():
        if not key.startswith("logits/"):
            assert ours[1][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for name, grad in theirs[2].items():
        assert torch.allclose(ours[2][name], grad, rtol=1e-4, atol=1e-7), name
        assert torch.allclose(compact[2][name], grad, rtol=1e-4, atol=1e-7), name


def test_thread_probe_picks_a_candidate_and_restores_torch():
    before = torch.get_num_threads()
    assert fastest_thread_count([1, 2]) in (1, 2)
    assert fastest_thread_count([3]) == 3
    with cpu_threads(torch.device("cpu"), 1) as chosen:
        assert chosen == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_curve_panels_follow_the_logged_keys(tmp_path):
    dpo_log = [{"step": 1, "loss": 0.69, "rewards/chosen": 0.0, "rewards/rejected": 0.0,
                "rewards/margins": 0.0, "rewards/accuracies": 0.0}, {"step": 2, "loss": 0.6}]
    panels = curve_panels(dpo_log)
    assert [len(p["lines"]) for p in panels] == [1, 2, 1, 1]
    assert IMPLICIT_REWARD in panels[1]["title"]
    orpo_log = [{"step": 1, "loss": 5.0, "nll_loss": 4.9, "log_odds_ratio": -0.7, "rewards/chosen": -0.5}]
    panels = curve_panels(orpo_log)
    assert panels[0]["lines"] == [("loss", "loss"), ("NLL part (chosen)", "nll_loss")]
    assert LOGPROB_REWARD in panels[1]["title"] and len(panels) == 2
    path = plot_training_curves([], tmp_path / "empty.png", "nothing logged")
    assert path.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- embedded model

def completion_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    """log π(completion | prompt), summed over the completion tokens."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    assert ids[:len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
    return float(logp[len(prompt_ids) - 1:].sum())


def heldout_margins(model, tokenizer, records) -> list[float]:
    """log π(support | x) − log π(oppose | x) per held-out prompt, rendered as in training."""
    pairs = [PreferencePair(r.id, r.prompt, r.support, r.oppose) for r in records]
    rows = to_chat_rows(pairs, tokenizer)
    return [completion_logprob(model, tokenizer, row["prompt"], row["chosen"])
            - completion_logprob(model, tokenizer, row["prompt"], row["rejected"]) for row in rows]


@pytest.mark.embedded
def test_embedded_dpo_moves_the_heldout_margin_towards_support(embedded, tmp_path):
    """4 pairs preferring 'support', 2 steps: the support-minus-oppose log-likelihood margin on
    held-out stance-test prompts grows (measured: about +0.3 nats summed over two prompts)."""
    config = TrainConfig(dataset="stance", data_size=4, support_ratio=1.0, epochs=1, batch_size=2,
                         learning_rate=3e-4)
    result = train(config, tmp_path / "support", model=embedded, progress=False)
    records = load_stance_records("stance-test")[:2]
    model = result.lm.model
    with cpu_threads(torch.device("cpu"), result.meta["threads"]):
        after = heldout_margins(model, embedded.tokenizer, records)
        with model.disable_adapter():
            before = heldout_margins(model, embedded.tokenizer, records)
        untouched = heldout_margins(embedded.model, embedded.tokenizer, records)
    assert before == pytest.approx(untouched, abs=1e-3)  # disabling the adapter gives the base back
    assert sum(after) > sum(before), (before, after)
    # the written adapter loads onto the embedded base by path and reproduces the trained model
    reloaded = load_model(adapter=str(result.out_dir), device="cpu")
    ids = torch.tensor([embedded.encode(records[0].prompt)])
    with torch.no_grad():
        assert torch.allclose(reloaded.model(ids).logits, model(ids).logits, atol=1e-4)


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_length_grouped_batches_train(tmp_path, data, method):
    result = train(tiny_config(data, method, group_by_length=True), tmp_path / "g", model=tiny_lm(),
                   progress=False)
    assert result.meta["steps"] == 2 and result.meta["config"]["group_by_length"] is True
