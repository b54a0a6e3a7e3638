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


def test_a_stopped_run_is_stopped_not_failed(tmp_path):
    job = train_runs.new_job("run1", TrainConfig(), adapters_dir=tmp_path / "a", jobs_dir=tmp_path / "j")
    assert train_runs.job_status(job, 1, known=True) == "failed"
    assert train_runs.job_status(job, 130, known=True) == "stopped"        # declab after SIGINT
    assert train_runs.job_status(job, -15, known=True) == "stopped"        # killed by SIGTERM
    job.stop_path.write_text("1")                                          # Stop was pressed
    assert train_runs.job_status(job, 1, known=True) == "stopped"
    assert train_runs.job_status(job, None, known=False) == "stopped"      # another lab's, gone


def test_one_run_per_model_and_runs_of_other_lab_processes(tmp_path):
    jobs_dir, adapters = tmp_path / "j", tmp_path / "a"
    embedded = train_runs.new_job("e", TrainConfig(), adapters_dir=adapters, jobs_dir=jobs_dir)
    other = train_runs.new_job("o", TrainConfig(), model="m.gguf", adapters_dir=adapters, jobs_dir=jobs_dir)
    jobs = train_runs.list_jobs(jobs_dir)
    assert {j.name: j.model for j in jobs} == {"e": None, "o": "m.gguf"}
    statuses = {"e": "running", "o": "finished"}
    assert train_runs.running_on(None, jobs, statuses) == embedded
    assert train_runs.running_on("", jobs, statuses) == embedded
    assert train_runs.running_on("m.gguf", jobs, statuses) is None
    assert train_runs.running_on("m.gguf", jobs, {"o": "running"}) == other
    # a run started by another lab process: running while its pid lives and no exit code
    import os
    other.pid = os.getpid()
    assert train_runs.job_status(other, None, known=False, alive=train_runs.pid_alive(other.pid)) == "running"
    train_runs.record_exit(other, 0)
    assert train_runs.job_status(other, None, known=False, alive=True) == "failed"   # no adapter


@pytest.mark.parametrize("dataset", ["stance-test", "stance-judge",
                                     "alignment/datasets/stance_test.json"])
def test_held_out_sets_cannot_be_trained_on(dataset):
    with pytest.raises(DecodingLabError, match="held out for evaluation"):
        TrainConfig(dataset=dataset)


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


def test_held_out_sets_are_not_offered(at):
    options = at.selectbox(key=ta.DATASET_KEY).options
    assert "stance" in options and "stance-test" not in options and "stance-judge" not in options
    at.selectbox(key=ta.DATASET_KEY).set_value(ta.OTHER_FILE).run()
    at.text_input(key=ta.PATH_KEY).input("alignment/datasets/stance_judge_set.jsonl").run()
    assert len(at.error) == 1 and "held-out stance-judge set" in at.error[0].value
    assert at.button(key=ta.START_KEY).disabled


SLEEPER = ("import time\nfrom app.interrupts import accept_interrupts\naccept_interrupts()\n"
           "try:\n    print('training', flush=True); time.sleep(120)\n"
           "except KeyboardInterrupt:\n    raise SystemExit(130)\n")


def test_start_twice_starts_one_run_and_stop_shows_stopped(at, dirs, monkeypatch):
    """A run that trains until stopped (the command is a stand-in: the page's logic is under
    test, the real run is in the test above)."""
    import sys

    monkeypatch.setattr(train_runs, "train_command", lambda *a, **k: [sys.executable, "-c", SLEEPER])
    choose_file(at, dirs / "pairs.json")
    at.button(key=ta.START_KEY).click().run()
    at.button(key=ta.START_KEY).click().run()           # the double click
    assert not at.exception
    jobs = train_runs.list_jobs()
    assert len(jobs) == 1
    assert at.button(key=ta.START_KEY).disabled
    assert any("is training on this model: the lab trains one run per model" in c.value
               for c in at.caption)
    # a second model may train beside it
    at.sidebar.text_input(key=lab_state.MODEL_KEY).input(str(dirs / "other-model")).run()
    assert not at.button(key=ta.START_KEY).disabled
    at.sidebar.text_input(key=lab_state.MODEL_KEY).input("").run()
    wait_for(at, lambda at: "training" in train_runs.log_tail(jobs[0].log_path), timeout=60)
    at.button(key=ta.key(f"stop.{jobs[0].name}")).click().run()
    wait_for(at, lambda at: any(i.value == "Stopped on request; no adapter was written." for i in at.info),
             timeout=60)
    assert not at.error
    assert any(f"{jobs[0].name}** · stopped" in m.value for m in at.markdown)
    assert not at.button(key=ta.START_KEY).disabled
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
    assert "tiny-run" in options                            # listed by name, not by its path
    at.sidebar.selectbox(key=lab_state.ADAPTER_PICK_KEY).set_value(
        next(o for o in lab_state.adapter_options() if o.endswith("tiny-run"))).run()
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
    job = train_runs.TrainJob(name="j", out_dir=str(tmp_path / "out"), job_dir=str(tmp_path),
                              command=[], pid=process.pid)
    assert train_runs.stop(job, process)
    assert process.wait(timeout=30) == 130
    assert (tmp_path / "interrupted").read_text() == "yes"
    assert not train_runs.stop(job, process)   # a finished process: nothing to do
    train_runs.record_exit(job, 130)
    assert train_runs.job_status(job, None, known=False) == "stopped"


def test_a_run_stopped_while_it_still_imports_torch_ends_as_interrupted_without_traceback(tmp_path):
    """Loading torch takes seconds; a Stop then (here: while a stand-in for a slow disk holds the
    import of torch) is exit 130 and one line, also on a launch that inherited SIGINT ignored."""
    import signal
    import subprocess
    import sys

    script = ("import sys, time, importlib.abc\n"
              "class Slow(importlib.abc.MetaPathFinder):\n"
              "    def find_spec(self, name, path, target=None):\n"
              "        if name == 'torch':\n"
              "            print('importing torch', flush=True); time.sleep(60)\n"
              "        return None\n"
              "sys.meta_path.insert(0, Slow())\n"
              "from app.cli import main\n"
              "raise SystemExit(main(['train', '--help']))\n")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert process.stdout.readline().strip() == "importing torch"
    job = train_runs.TrainJob(name="j", out_dir=str(tmp_path / "out"), job_dir=str(tmp_path),
                              command=[], pid=process.pid)
    assert train_runs.stop(job, process)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err.strip() == "declab: interrupted"
