"""Training as a child process of the app: killed children, app restarts, children that ignore Cancel.

Run: pytest tests/test_jobs.py
"""

import json
import os
import signal
import time
from pathlib import Path

import pytest
from gradio_client import Client

from llmft import LlmftError
from llmft.access import LOCAL_USER
from llmft.context import Context
from llmft.jobs import Jobs
from llmft.runs import read_run
from llmft.training import TrainConfig
from llmft.ui import build_app, launch
from tests.conftest import free_port


def serve(runs, model_dirs):
    app = build_app(str(runs), model_dirs=model_dirs)
    _, url, _ = launch(app, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return app, Client(url, verbose=False)


def long_run(tiny_distilbert, runs, name):
    """A run that trains until it is stopped (5,000 steps on the tiny model)."""
    return TrainConfig(
        task="sentiment", model=tiny_distilbert, runs_dir=str(runs), run_name=name, max_steps=5000, train_samples=0
    )


def wait_until(predicate, timeout=90, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def training_step(runs, name):
    path = Path(runs) / name / "run.json"
    return path.is_file() and json.loads(path.read_text()).get("step", 0) >= 2


def test_a_child_killed_mid_run_is_marked_failed_and_the_app_keeps_serving(tiny_distilbert, tmp_path):
    runs = tmp_path / "runs"
    app, client = serve(runs, [tiny_distilbert])
    try:
        ctx = app.llmft_context
        job = ctx.jobs.start(long_run(tiny_distilbert, runs, "doomed"))
        wait_until(lambda: training_step(runs, "doomed"), what="the child's first steps")
        os.kill(job.pid, signal.SIGKILL)  # as the OOM killer would
        state = wait_until(
            lambda: (s := client.predict(api_name="/progress")) and "failed" in s[0] and s, what="failed status"
        )
        assert "SIGKILL" in state[0] and "doomed" in state[0]
        info = read_run(runs / "doomed")
        assert info["status"] == "failed" and "SIGKILL" in info["error"]
        assert not (runs / "doomed" / "adapter").exists()
        table, *_ = client.predict(api_name="/runs")  # the app still answers, and lists the run as failed
        assert ["doomed", "failed"] == table["data"][0][:2]
    finally:
        app.close()


def test_an_app_restarted_while_a_child_trains_reattaches_and_can_cancel_it(tiny_distilbert, tmp_path):
    runs = tmp_path / "runs"
    first, _ = serve(runs, [tiny_distilbert])
    first.llmft_context.jobs.start(long_run(tiny_distilbert, runs, "survivor"))
    wait_until(lambda: training_step(runs, "survivor"), what="the child's first steps")
    first.close()  # the app goes away; its child trains on
    second, client = serve(runs, [tiny_distilbert])
    try:
        state = client.predict(api_name="/progress")
        assert "survivor" in state[0] and "running" in state[0]
        # A fresh page of the restarted app shows the running job's settings and command in the form.
        from llmft.ui.finetune import restore

        names = second.llmft_form_fields
        *values, command = restore(second.llmft_context, LOCAL_USER, names)
        shown = {name: v.get("value") for name, v in zip(names, values) if "value" in v}
        assert shown["run_name"] == "survivor" and shown["max_steps"] == 5000 and shown["source"] == "bundled sample"
        assert "--run-name survivor" in command
        with pytest.raises(LlmftError, match=r"a run is in progress \(survivor"):
            second.llmft_context.jobs.start(long_run(tiny_distilbert, runs, "another"))
        assert "Cancelling" in client.predict(api_name="/cancel")
        wait_until(lambda: "cancelled" in client.predict(api_name="/progress")[0], what="cancelled status")
        info = read_run(runs / "survivor")
        assert info["status"] == "cancelled" and info["step"] < 5000
        assert not (runs / "another").exists()
    finally:
        second.close()


def test_a_child_that_ignores_cancel_is_killed_after_the_grace_period(tiny_distilbert, tmp_path):
    runs = tmp_path / "runs"
    ctx = Context.create(runs)
    Jobs(ctx, grace_s=1.0)
    job = ctx.jobs.start(long_run(tiny_distilbert, runs, "stubborn"))
    wait_until(lambda: training_step(runs, "stubborn"), what="the child's first steps")
    os.kill(job.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM; SIGKILL still ends it
    assert ctx.jobs.cancel()
    wait_until(lambda: not job.running, timeout=30, what="the kill")
    info = wait_until(lambda: (i := read_run(runs / "stubborn"))["status"] != "running" and i, what="run.json")
    assert info["status"] == "cancelled" and "did not stop within 1 s" in info["error"]
    assert not ctx.jobs.cancel()  # nothing runs any more


def test_a_child_that_fails_while_preparing_reports_one_line_and_leaves_nothing(tmp_path):
    runs = tmp_path / "runs"
    bad = tmp_path / "bad.csv"
    bad.write_text("review,label\ngood,1\n")
    ctx = Context.create(runs)
    Jobs(ctx)
    with pytest.raises(LlmftError, match="^column 'text' not found in .*bad.csv; columns are: label, review$"):
        ctx.jobs.start(TrainConfig(task="sentiment", model="minilm", data=str(bad), run_name="bad"))
    assert not (runs / "bad").exists()
    assert ctx.jobs.current().status().startswith("failed: column 'text' not found")


def test_the_waiting_line_survives_a_restart_in_its_order(tiny_distilbert, tmp_path):
    """Requests waiting for a training slot are written down: a server started again on the same runs home takes
    them up in the same order (a cancelled one stays out) and starts them by itself as slots free up."""
    runs = tmp_path / "runs"
    jobs = Jobs(Context.create(runs), slots=0)  # no slot: every request waits
    for name in ("first", "second", "third"):
        config = TrainConfig(
            task="sentiment", model=tiny_distilbert, run_name="run", max_steps=2, train_samples=16, owner=name
        )  # three visitors: one request each
        assert jobs.start(config).status() == "waiting"  # each visitor's run: <visitor>.run
    jobs.cancel("second.run")

    restarted = Jobs(Context.create(runs), slots=0)  # the app again, after a restart
    assert [restarted.position(n) for n in ("first.run", "second.run", "third.run")] == [(1, 2), None, (2, 2)]
    assert restarted.find("third.run").config.max_steps == 2
    restarted.slots = 1  # a slot frees: the line moves by itself, first come first served
    wait_until(lambda: (runs / "third.run" / "run.json").is_file(), timeout=180, what="the line to reach 'third'")
    wait_until(lambda: not restarted.running(), timeout=180, what="the runs to end")
    assert read_run(runs / "first.run")["status"] == "completed" and not (runs / "second.run").exists()
    assert read_run(runs / "first.run")["started_at"] <= read_run(runs / "third.run")["started_at"]


def test_a_search_killed_with_its_server_is_resumed_by_the_next_one(tiny_distilbert, tmp_path):
    """A search the app started is written down while it runs: killed with its server (a container restart), the
    next server resumes its study with the trials it had left; the trial the kill interrupted is marked failed in
    the study and in its run, and run again (3 trials asked for: 3 finish)."""
    import optuna

    from llmft.jobs import SearchJob
    from llmft.search import default_storage

    runs = tmp_path / "runs"
    jobs = Jobs(Context.create(runs))
    config = TrainConfig(
        task="sentiment", model=tiny_distilbert, max_steps=40, train_samples=48, val_split=8, eval_steps=20
    )
    job = jobs.start_search(config, 3, None, "restarts")
    wait_until(lambda: training_step(runs, "restarts-t001"), timeout=180, what="the second trial's first steps")
    os.killpg(job.pid, signal.SIGKILL)  # the container restarts: the search and its trial die with the server
    job.process.wait()

    restarted = Jobs(Context.create(runs))  # the app again, on the same runs home
    resumed = restarted.find("restarts")
    assert isinstance(resumed, SearchJob) and resumed.pid != job.pid and "--trials 2" in resumed.command
    wait_until(lambda: not resumed.running, timeout=240, what="the resumed search to end")
    assert resumed.status() == "completed", resumed.tail()
    trials = optuna.load_study(study_name="restarts", storage=default_storage(runs)).trials
    states = [t.state.name for t in trials]
    assert states[1] == "FAIL" and states.count("COMPLETE") + states.count("PRUNED") == 3, states
    assert read_run(runs / "restarts-t001")["status"] == "failed"
    assert json.loads((runs / ".jobs" / "searches.json").read_text()) == []  # done: nothing left to resume
