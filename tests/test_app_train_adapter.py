"""The Train an adapter page: the command, the live log readers (pure), and the page through
AppTest, including one real background run of ``declab train`` on a saved tiny model (~10 s)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import app.cli
from alignment.train import TrainConfig
from app import lab_state, train_runs
from app.cli_common import dataclass_from_args
from app.views import train_adapter as ta
from decoding.errors import DecodingLabError
from tests.app_pages import open_page

RECORDS = [{"id": i, "prompt": f"Is topic {i} good?", "support": f"Yes, topic {i} helps.",
            "oppose": f"No, topic {i} hurts."} for i in range(4)]


# --------------------------------------------------------------------------- pure helpers

@pytest.mark.parametrize("config", [
    TrainConfig(),
    TrainConfig(method="orpo", dataset="stance", data_size=10, support_ratio=0.3, epochs=1, beta=0.2,
                learning_rate=5e-5),
    TrainConfig(target_modules=("q_proj", "v_proj"), chat=False, threads=2),
])
def test_train_command_round_trips_through_the_cli(config, tmp_path):
    command = train_runs.train_command(config, tmp_path / "out", tmp_path / "p.jsonl", model="m",
                                       python="py")
    assert command[:4] == ["py", "-m", "app.cli", "train"]
    args = app.cli.build_parser().parse_args(command[3:])
    assert dataclass_from_args(TrainConfig, args) == config
    assert (args.out, args.progress_log, args.model) == (str(tmp_path / "out"), str(tmp_path / "p.jsonl"), "m")


def test_read_progress_skips_a_line_being_written(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [{"event": "begin", "max_steps": 4, "epochs": 2},
             {"loss": 0.69, "rewards/chosen": 0.0, "step": 1, "epoch": 0.5},
             {"loss": 0.6, "rewards/margins": 0.1, "step": 2, "epoch": 1.0}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"loss": 0.5, "st')
    begin, entries, ended = train_runs.read_progress(path)
    assert begin["max_steps"] == 4 and [e["step"] for e in entries] == [1, 2] and not ended
    with open(path, "a") as f:
        f.write('ep": 3}\n{"train_runtime": 9.0, "train_loss": 0.6, "step": 3}\n{"event": "end", "step": 3}\n')
    begin, entries, ended = train_runs.read_progress(path)
    assert [e["step"] for e in entries] == [1, 2, 3, 3] and ended
    frame = train_runs.curve_frame(entries)
    assert list(frame.itertuples(index=False, name=None)) == [
        (1, "loss", 0.69), (1, "rewards/chosen", 0.0), (2, "loss", 0.6), (2, "rewards/margins", 0.1),
        (3, "loss", 0.5)]
    assert train_runs.read_progress(tmp_path / "missing.jsonl") == (None, [], False)


def test_log_tail_keeps_the_last_tqdm_redraw_and_finds_the_cli_error(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("loading\n 10%|#  | 1/10\r 20%|## | 2/10\r\nwarning\n"
                   "declab: error: dataset='x.json' is neither a shipped dataset nor a file\n")
    tail = train_runs.log_tail(log)
    assert tail.splitlines() == ["loading", " 20%|## | 2/10", "warning",
                                 "declab: error: dataset='x.json' is neither a shipped dataset nor a file"]
    assert train_runs.log_tail(log, lines=1).startswith("declab: error:")
    assert train_runs.error_message(tail) == "dataset='x.json' is neither a shipped dataset nor a file"
    assert train_runs.error_message("Traceback ...\nValueError") is None


def test_names_are_checked_and_default_names_describe_the_run(tmp_path):
    adapters, jobs = tmp_path / "adapters", tmp_path / "jobs"
    (adapters / "taken").mkdir(parents=True)
    assert train_runs.check_name("dpo-1.a_b", adapters, jobs) == "dpo-1.a_b"
    for bad in ("", "../x", "a b", ".hidden"):
        with pytest.raises(DecodingLabError, match="is not allowed"):
            train_runs.check_name(bad, adapters, jobs)
    with pytest.raises(DecodingLabError, match="is taken"):
        train_runs.check_name("taken", adapters, jobs)
    name = train_runs.default_name(TrainConfig(support_ratio=0.5, data_size=20, epochs=2), now=0)
    assert name.startswith("dpo-stance-r0.5-n20-e2-") and train_runs.NAME_PATTERN.fullmatch(name)


def test_job_status_and_adapter_listing(tmp_path):
    job = train_runs.new_job("run1", TrainConfig(), adapters_dir=tmp_path / "a", jobs_dir=tmp_path / "j")
    assert train_runs.list_jobs(tmp_path / "j") == [job]
    assert train_runs.job_status(job, None, known=True) == "running"
    assert train_runs.job_status(job, None, known=False) == "unknown"
    assert train_runs.job_status(job, 2, known=True) == "failed"
    train_runs.record_exit(job, 0)
    assert train_runs.job_status(job, None, known=False) == "failed"   # exit 0 but no adapter
    (tmp_path / "a" / "run1").mkdir(parents=True)
    (tmp_path / "a" / "run1" / "adapter_config.json").write_text("{}")
    (tmp_path / "a" / ".run2.x.partial").mkdir()
    assert train_runs.job_status(job, None, known=False) == "finished"
    assert train_runs.list_adapters(tmp_path / "a") == [tmp_path / "a" / "run1"]


# --------------------------------------------------------------------------- the page

@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(train_runs, "ADAPTERS_DIR", tmp_path / "adapters")
    monkeypatch.setattr(train_runs, "JOBS_DIR", tmp_path / "jobs")
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(RECORDS))
    return tmp_path


@pytest.fixture
def at(dirs, monkeypatch):
    return open_page("train", monkeypatch)


def test_page_renders_with_the_shipped_dataset_and_help_from_train_config(at):
    assert not at.exception and not at.error
    assert [t.value for t in at.title] == ["Train an adapter"]
    assert at.selectbox(key=ta.DATASET_KEY).value == "stance"
    _, records = train_runs.dataset_summary("stance")
    assert at.number_input(key=ta.key("data_size.stance")).value == records
    assert at.slider(key=ta.key("support_ratio")).help == TrainConfig.__dataclass_fields__[
        "support_ratio"].metadata["help"]
    assert "No runs yet." in [c.value for c in at.caption]


def test_missing_dataset_file_shows_the_loader_message(at, dirs):
    at.selectbox(key=ta.DATASET_KEY).set_value(ta.OTHER_FILE).run()
    at.text_input(key=ta.PATH_KEY).input(str(dirs / "nope.json")).run()
    assert not at.exception
    assert len(at.error) == 1 and "nope.json" in at.error[0].value
    assert at.button(key=ta.START_KEY).disabled


def wait_for(at, done, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        if done(at):
            return at
        time.sleep(1.0)
    pytest.fail("the training run did not finish in time:\n" + train_runs.log_tail(
        train_runs.list_jobs()[0].log_path))


def choose_file(at, path: Path):
    at.selectbox(key=ta.DATASET_KEY).set_value(ta.OTHER_FILE).run()
    at.text_input(key=ta.PATH_KEY).input(str(path)).run()


def test_a_real_background_run_shows_curves_and_lands_in_the_sidebar(at, dirs):
    from tests.tiny import tiny_model, tiny_tokenizer

    model_dir = dirs / "tiny-model"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    at.sidebar.text_input(key=lab_state.MODEL_KEY).input(str(model_dir))
    choose_file(at, dirs / "pairs.json")
    at.number_input(key=ta.key("epochs")).set_value(2)
    at.text_input(key=ta.NAME_KEY).input("tiny-run")
    started = time.monotonic()
    at.button(key=ta.START_KEY).click().run()
    assert time.monotonic() - started < 5, "starting a run must not wait for it"
    assert not at.exception and not at.error
    job = train_runs.list_jobs()[0]
    assert job.name == "tiny-run" and "--progress-log" in job.command
    assert job.command[job.command.index("--model") + 1] == str(model_dir)

    wait_for(at, lambda at: any("Adapter written to" in s.value for s in at.success))
    begin, entries, ended = train_runs.read_progress(job.progress_path)
    assert begin["max_steps"] == 1 * 2 and ended          # 4 pairs, batch 8: one step per epoch
    assert len(at.get("vega_lite_chart")) == 1
    assert (dirs / "adapters" / "tiny-run" / "adapter_config.json").is_file()
    options = at.sidebar.selectbox(key=lab_state.ADAPTER_PICK_KEY).options
    assert any(o.endswith("tiny-run") for o in options)
    at.sidebar.selectbox(key=lab_state.ADAPTER_PICK_KEY).set_value(
        next(o for o in options if o.endswith("tiny-run"))).run()
    assert at.sidebar.text_input(key=lab_state.ADAPTER_KEY).value.endswith("tiny-run")


def test_a_cli_error_is_shown_in_an_error_box(at, dirs):
    at.sidebar.text_input(key=lab_state.MODEL_KEY).input(str(dirs / "no-such-model.gguf"))
    choose_file(at, dirs / "pairs.json")
    at.text_input(key=ta.NAME_KEY).input("bad-run")
    at.button(key=ta.START_KEY).click().run()
    wait_for(at, lambda at: len(at.error) > 0)
    job = train_runs.list_jobs()[0]
    assert job.exit_path.read_text() == "2"
    assert "no such .gguf file" in at.error[0].value
    assert not (dirs / "adapters" / "bad-run").exists()


def test_stop_interrupts_the_run_and_leaves_no_partial_output(tmp_path):
    """``stop`` sends SIGINT to the process group: a Python child sees KeyboardInterrupt, even
    one started with SIGINT ignored (a background launch without job control, as CI may do),
    because it calls ``accept_interrupts`` as ``declab`` does."""
    import signal
    import subprocess
    import sys

    script = ("import time, pathlib\n"
              "from app.interrupts import accept_interrupts\n"
              "assert accept_interrupts()\n"
              "try:\n    print('ready', flush=True); time.sleep(60)\n"
              "except KeyboardInterrupt:\n    pathlib.Path('interrupted').write_text('yes')\n    raise SystemExit(130)\n")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                               start_new_session=True, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert process.stdout.readline().strip() == "ready"
    train_runs.stop(process)
    assert process.wait(timeout=30) == 130
    assert (tmp_path / "interrupted").read_text() == "yes"
    train_runs.stop(process)   # a finished process: nothing to do
