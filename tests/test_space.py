"""The app as a public Space: sign-in, per-user runs, the visitor's own token, fair use.

Through the real app on a localhost port with gradio_client. Signed-in visitors are faked the way Gradio's own
local OAuth mode fakes them: a session cookie holding the `oauth_info` that Gradio's login callback stores,
signed with the app's session key, read by the real SessionMiddleware, and turned into `gr.OAuthProfile` /
`gr.OAuthToken` by Gradio itself. The app's path is not replaced. Run: pytest tests/test_space.py
"""

import json
import shutil

import pytest

from llmft.runs import read_run, update_run
from tests.conftest import SPACE_SECRET
from tests.test_app import form
from tests.test_jobs import wait_until


def run_names(client) -> set[str]:
    table, *_ = client.predict(api_name="/runs")
    return {row[0] for row in table["data"]}


def train_values(space, **kwargs):
    values = form(model=space.ctx.allowed_roots[-1].as_posix(), **kwargs)
    return [values[name] for name in space.app.llmft_form_fields]


def test_anonymous_visitors_see_public_runs_and_cannot_train_cancel_delete_share_or_push(space):
    anon = space.visitor()
    assert run_names(anon) == {"demo"}
    refusals = {
        "/train": train_values(space, run_name="anon-run"),
        "/cancel": ["demo"],
        "/delete_run": ["demo"],
        "/share_run": ["demo", True],
        "/push": ["demo", "someone/demo", True, False],
    }
    for endpoint, args in refusals.items():
        with pytest.raises(Exception, match="sign in with Hugging Face"):
            anon.predict(*args, api_name=endpoint)
    assert {"demo", "alice-run", "bob-run"} <= {p.name for p in space.runs.iterdir()}
    assert not (space.runs / "anon-run").exists() and not read_run(space.runs / "demo").get("shared")
    # What anonymous visitors may do: compare with a public run.
    out = anon.predict("sentiment", "", "demo", "a fine film", "", 64, api_name="/compare")
    assert out[0] in ("Positive", "Negative")
    # ... but never with a private run, not even through its folder.
    with pytest.raises(Exception, match="not found"):
        anon.predict("sentiment", "", str(space.runs / "alice-run" / "adapter"), "a film", "", 64, api_name="/compare")


def test_a_visitor_cannot_see_or_touch_another_visitors_run(space):
    alice, bob = space.visitor("alice"), space.visitor("bob")
    assert run_names(alice) == {"demo", "alice-run"}
    assert run_names(bob) == {"demo", "bob-run"}
    private = {
        "/run_details": ["bob-run"],
        "/download_adapter": ["bob-run"],
        "/delete_run": ["bob-run"],
        "/share_run": ["bob-run", True],
        "/cancel": ["bob-run"],
        "/push": ["bob-run", "alice/stolen", True, False],
    }
    for endpoint, args in private.items():
        with pytest.raises(Exception, match="run 'bob-run' not found"):
            alice.predict(*args, api_name=endpoint)
    with pytest.raises(Exception, match="not found"):  # nor through the run's folder
        alice.predict("sentiment", "", str(space.runs / "bob-run" / "adapter"), "a film", "", 64, api_name="/compare")

    # Shared, Bob's run is visible to everyone, and still only Bob's to change.
    assert "visible to every visitor" in bob.predict("bob-run", True, api_name="/share_run")
    assert "bob-run" in run_names(alice) and "bob-run" in run_names(space.visitor())
    for endpoint, args in {
        "/delete_run": ["bob-run"],
        "/share_run": ["bob-run", False],
        "/push": ["bob-run", "alice/copy", True, False],
    }.items():
        with pytest.raises(Exception, match="run bob-run is not yours: only its owner may"):
            alice.predict(*args, api_name=endpoint)
    # The Space's own runs belong to its owner: a visitor cannot delete them either.
    with pytest.raises(Exception, match="run demo is not yours"):
        alice.predict("demo", api_name="/delete_run")
    assert (space.runs / "bob-run").is_dir() and (space.runs / "demo").is_dir()
    assert "visible to you only" in bob.predict("bob-run", False, api_name="/share_run")
    assert "bob-run" not in run_names(alice)

    # An admin sees and may change every run.
    admin = space.visitor("admin")
    assert {"demo", "alice-run", "bob-run"} <= run_names(admin)
    shutil.copytree(space.runs / "bob-run", space.runs / "bob-old")
    update_run(space.runs / "bob-old", name="bob-old")
    assert "Deleted run bob-old" in admin.predict("bob-old", api_name="/delete_run")
    assert not (space.runs / "bob-old").exists()


def test_an_api_client_acts_as_the_owner_of_the_token_it_sends(space, monkeypatch):
    """`Client(..., oauth_token=...)` without a browser session: the hub says whose token it is (a LOCAL
    STAND-IN for `whoami` here: the hub is not reachable)."""
    import huggingface_hub

    def whoami(token=None, **_):
        if token == "hf_carol_token":
            return {"type": "user", "name": "carol"}
        raise huggingface_hub.errors.HfHubHTTPError("401 Unauthorized")

    monkeypatch.setattr(huggingface_hub, "whoami", whoami)
    carol = space.visitor(oauth_token="hf_carol_token")
    assert run_names(carol) == {"demo"}
    with pytest.raises(Exception, match="run 'alice-run' not found"):
        carol.predict("alice-run", api_name="/delete_run")
    with pytest.raises(Exception, match="was not accepted; sign in again"):
        space.visitor(oauth_token="hf_forged").predict("demo", api_name="/delete_run")


def test_push_uses_the_visitors_token_into_their_namespace_never_the_spaces_hf_token(space, monkeypatch, tmp_path):
    """Uses a LOCAL STAND-IN for the two hub API calls (see test_scaleout.FakeHub); it also records the token
    each call was made with."""
    import huggingface_hub

    from tests.test_scaleout import FakeHub

    fake, tokens = FakeHub(tmp_path / "hub"), []

    def create_repo(api, *a, **k):
        tokens.append(api.token)
        return fake.create_repo(*a, **k)

    def upload_folder(api, *a, **k):
        tokens.append(api.token)
        return fake.upload_folder(*a, **k)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    alice = space.visitor("alice")
    message = alice.predict("alice-run", "sentiment-lora", True, False, api_name="/push")
    assert "Pushed run alice-run to alice/sentiment-lora" in message
    assert (tmp_path / "hub" / "alice" / "sentiment-lora" / "adapter_model.safetensors").is_file()
    assert tokens == ["hf_oauth_alice", "hf_oauth_alice"]  # the visitor's, never the server's HF_TOKEN
    with pytest.raises(Exception, match="push to your own namespace: alice/<name>, not 'someone/x'"):
        alice.predict("alice-run", "someone/x", True, False, api_name="/push")
    assert SPACE_SECRET not in tokens and len(tokens) == 2


def test_quotas_refuse_training_with_a_clear_message(space):
    alice, access = space.visitor("alice"), space.ctx.access
    saved = access.max_runs, access.max_disk_mb
    try:
        access.max_runs = 1
        quota = r"you have 1 runs here and this makes 1 more; the most one user may keep is 1: delete some"
        with pytest.raises(Exception, match=quota):
            alice.predict(*train_values(space, run_name="second"), api_name="/train")
        access.max_runs, access.max_disk_mb = 20, 0.01
        with pytest.raises(Exception, match=r"your runs take [\d.]+ MB here, the most one user may use is 0.01 MB"):
            alice.predict(*train_values(space, run_name="second"), api_name="/train")
    finally:
        access.max_runs, access.max_disk_mb = saved
    assert not (space.runs / "alice.second").exists()


def test_one_training_at_a_time_and_a_third_request_waits_with_its_position(space):
    """The server trains one run at a time (the CPU default): a second and a third visitor wait in line and
    see their place; a visitor never has two runs at once; a waiting run starts when the line reaches it."""
    alice, bob, carol = space.visitor("alice"), space.visitor("bob"), space.visitor("carol")
    long_run = dict(steps=5000, train_samples=0)
    try:
        started = alice.predict(*train_values(space, run_name="long", **long_run), api_name="/train")
        assert "Started run **alice.long**" in started[0]
        bob_says = bob.predict(*train_values(space, run_name="wait", **long_run), api_name="/train")
        assert "Run bob.wait is waiting: number 1 of 1 in line" in bob_says[0]
        carol_says = carol.predict(*train_values(space, run_name="wait", **long_run), api_name="/train")
        assert "Run carol.wait is waiting: number 2 of 2 in line" in carol_says[0]
        with pytest.raises(Exception, match=r"a run is in progress \(alice.long"):
            alice.predict(*train_values(space, run_name="alice-again"), api_name="/train")
        with pytest.raises(Exception, match=r"a run is waiting \(bob.wait"):
            bob.predict(*train_values(space, run_name="bob-again"), api_name="/train")
        # Each visitor's Fine-tune tab shows their own run: Bob's place in line, not Alice's progress.
        assert "number 1 of 2 in line" in bob.predict(api_name="/progress")[0]
        assert "alice.long" in alice.predict(api_name="/progress")[0]
        with pytest.raises(Exception, match="run 'alice.long' not found"):
            bob.predict("alice.long", api_name="/cancel")
        assert "left the line" in bob.predict("bob.wait", api_name="/cancel")
        assert "number 1 of 1 in line" in carol.predict(api_name="/progress")[0]
        assert not (space.runs / "bob.wait").exists()  # a request that never started leaves no run behind
        assert "Cancelling" in alice.predict("", api_name="/cancel")  # blank: the caller's own run
        # Alice's slot frees: Carol's run starts by itself.
        wait_until(lambda: (space.runs / "carol.wait" / "run.json").is_file(), what="carol's run to start")
        assert read_run(space.runs / "carol.wait")["config"]["owner"] == "carol"
        assert "carol.wait" in carol.predict(api_name="/progress")[0]
    finally:
        for name in ("alice.long", "bob.wait", "carol.wait"):
            space.ctx.jobs.cancel(name)
        wait_until(lambda: not space.ctx.jobs.running(), what="the trainings to stop")
    assert read_run(space.runs / "alice.long")["status"] == "cancelled"


def test_red_team_paths_and_private_tasks_are_refused(space):
    """What a red-team pass found, each refused: a padded path to a private adapter, a run named by its folder
    path, another visitor's own task (its prompt and labels) through Compare."""
    from llmft.access import User
    from llmft.pipeline import known_tasks
    from llmft.ui.common import visible_runs

    anon, alice = space.visitor(), space.visitor("alice")
    padded = " " + str(space.runs / "bob-run" / "adapter")
    with pytest.raises(Exception, match="not found"):
        anon.predict("sentiment", "", padded, "a film", "", 64, api_name="/compare")
    with pytest.raises(Exception, match="not a folder you can use here"):  # the model field, into the runs home
        anon.predict("sentiment", str(space.runs / ".uploads"), "demo", "a film", "", 64, api_name="/compare")
    with pytest.raises(Exception, match="invalid run name"):
        alice.predict(str(space.runs / "bob-run"), api_name="/run_details")

    secret = space.runs / "bob-topics"
    shutil.copytree(space.runs / "bob-run", secret)
    # (named to sort between the built-in tasks: other tests read the list of task names in this process)
    definition = {"name": "secrettopics", "type": "classify", "prompt": "SECRET: {text}", "labels": ["Bad", "Good"]}
    update_run(secret, name="bob-topics", task="secrettopics", task_def={**definition, "label_column": "label"})
    try:
        assert "secrettopics" not in known_tasks(space.ctx, visible_runs(space.ctx, User()))
        with pytest.raises(Exception, match="unknown task 'secrettopics'"):
            anon.predict("secrettopics", "", "demo", "a great film", "", 64, api_name="/compare")
        bob = space.visitor("bob")
        assert "secrettopics" in known_tasks(space.ctx, visible_runs(space.ctx, space.ctx.access.user("bob")))
        with pytest.raises(Exception, match="unknown task 'secrettopics'"):  # nor trained on by another visitor
            alice.predict(*train_values(space, task="secrettopics", run_name="alice-steal"), api_name="/train")
        assert bob.predict("secrettopics", "", "bob-topics", "a great film", "", 64, api_name="/compare")[0]
    finally:
        shutil.rmtree(secret)


def test_a_training_past_the_servers_time_limit_is_stopped(space, monkeypatch):
    """On a Space a run may not hold the server for days: `LLMFT_MAX_TRAIN_MINUTES` (60 by default)."""
    monkeypatch.setenv("LLMFT_MAX_TRAIN_MINUTES", str(4 / 60))  # 4 seconds
    dave = space.visitor("dave")
    dave.predict(*train_values(space, run_name="long", steps=5000, train_samples=0), api_name="/train")
    wait_until(lambda: read_run(space.runs / "dave.long")["status"] != "running", what="the limit to stop it")
    wait_until(lambda: "limit" in (read_run(space.runs / "dave.long").get("error") or ""), what="the reason")
    info = read_run(space.runs / "dave.long")
    assert info["status"] == "cancelled" and info["step"] < 5000
    assert info["error"] == "stopped: it ran past this server's limit of 0.0666667 minutes"


def test_one_client_cannot_fill_the_waiting_line_nor_post_huge_bodies(space, monkeypatch):
    """A client that joins evaluation after evaluation gets at most two model-heavy requests waiting or running;
    its third is refused in one line (429) while another visitor's request is still taken and answered; a body
    over the server's limit is refused (413) before it is read, with or without a length."""
    import threading

    import httpx

    from llmft.errors import LlmftError
    from llmft.ui import evaluate as evaluate_tab

    release = threading.Event()

    def held(*args, **kwargs):  # an evaluation that runs until the test lets it go
        release.wait(60)
        raise LlmftError("held by the test")

    monkeypatch.setattr(evaluate_tab, "evaluate", held)
    sample = ["the run's test sample", "", "", None, None, None, None, ""]
    attacker = space.visitor(headers={"X-Forwarded-For": "203.0.113.5"})
    other = space.visitor(headers={"X-Forwarded-For": "198.51.100.7"})
    try:
        jobs = [attacker.submit("demo", 5, 0, "", None, *sample, api_name="/evaluate") for _ in range(2)]
        wait_until(lambda: all(j.status().code.name in ("PROCESSING", "IN_QUEUE") for j in jobs), what="the joins")
        with pytest.raises(httpx.HTTPStatusError) as refused:
            attacker.submit("demo", 5, 0, "", None, *sample, api_name="/evaluate").result(timeout=30)
        assert refused.value.response.status_code == 429
        assert refused.value.response.json()["error"].startswith("you have 2 model requests")
        fair = other.submit("demo", 5, 0, "", None, *sample, api_name="/evaluate")
        wait_until(lambda: fair.status().code.name in ("IN_QUEUE", "PROCESSING"), what="the other visitor's join")
    finally:
        release.set()
    with pytest.raises(Exception, match="held by the test"):  # answered, once the line moved
        fair.result(timeout=60)

    big = b'{"data": ["' + b"x" * (5 * 2**20) + b'"], "fn_index": 0, "session_hash": "s"}'
    answer = httpx.post(f"{space.url}gradio_api/queue/join", content=big, timeout=60)
    assert answer.status_code == 413 and "over the 4 MB limit" in answer.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(6):
            yield b"x" * 2**20

    answer = httpx.post(f"{space.url}gradio_api/queue/join", content=chunks(), timeout=60)
    assert answer.status_code == 413


def test_a_visitors_evaluations_of_anothers_run_stay_in_their_own_space_and_quota(space):
    """Evaluating the Space's public run writes nothing into that run: an anonymous visitor's evaluation goes to a
    shared, capped folder (the oldest removed to make room), a signed-in visitor's to her own folder, where it counts
    against her disk quota and holds her blind votes; the run's Runs tab and model card never see them."""
    from llmft.access import VISITORS

    sample = ["the run's test sample", "", "", None, None, None, None, ""]
    demo = space.runs / "demo" / "evaluations"
    before = sorted(demo.iterdir()) if demo.is_dir() else []
    anon, alice = space.visitor(), space.visitor("alice")
    anon.predict("demo", 6, 0, "", None, *sample, api_name="/evaluate")
    alice.predict("demo", 6, 0, "", None, *sample, api_name="/evaluate")
    assert (sorted(demo.iterdir()) if demo.is_dir() else []) == before
    shared = space.runs / VISITORS / ".anonymous" / "demo" / "evaluations"
    mine = space.runs / VISITORS / "alice" / "demo" / "evaluations"
    assert len(list(shared.glob("*/summary.json"))) == 1 and len(list(mine.glob("*/summary.json"))) == 1
    first = next(shared.iterdir())
    assert sum(f.stat().st_size for f in first.iterdir()) < 6_000_000

    # Alice's blind votes on her evaluation are kept with it, in her folder.
    text, a, b, status = alice.predict(api_name="/review_next")
    assert "Item 1 of 6" in status
    alice.predict(api_name="/review_vote_tie")
    assert (mine.parent / "votes.jsonl").is_file() and not (space.runs / "demo" / "votes.jsonl").exists()

    access, saved = space.ctx.access, (space.ctx.access.max_disk_mb, space.ctx.access.max_anonymous_mb)
    try:
        access.max_disk_mb = 0.01  # her evaluations count against her quota
        with pytest.raises(Exception, match="your runs take"):
            alice.predict("demo", 6, 0, "", None, *sample, api_name="/evaluate")
        access.max_anonymous_mb = 10.5  # room for one evaluation: the oldest makes way
        anon.predict("demo", 6, 1, "", None, *sample, api_name="/evaluate")
        kept = list(shared.iterdir())
        assert len(kept) == 1 and kept[0] != first
    finally:
        access.max_disk_mb, access.max_anonymous_mb = saved


def test_a_study_name_another_visitor_used_starts_a_study_of_ones_own(space):
    """Searches belong to their owner like runs: Bob typing Alice's study name gets a study of his own, so he never
    resumes hers, sees her trials or rewrites their runs."""
    alice, bob = space.visitor("alice"), space.visitor("bob")
    values = train_values(space, steps=2, train_samples=24)
    try:
        said = alice.predict(1, 0, "topics", *values, api_name="/search")[0]
        assert "Started search **alice.topics**" in said
        wait_until(lambda: not space.ctx.jobs.running(), what="alice's search to end", timeout=180)
        said = bob.predict(1, 0, "alice.topics", *values, api_name="/search")[0]
        assert "Started search **bob.alice.topics**" in said
        wait_until(lambda: not space.ctx.jobs.running(), what="bob's search to end", timeout=180)
    finally:
        for job in list(space.ctx.jobs.running()):
            space.ctx.jobs.cancel(job.run_name)
    assert read_run(space.runs / "alice.topics-t000")["config"]["owner"] == "alice"
    assert read_run(space.runs / "bob.alice.topics-t000")["config"]["owner"] == "bob"


def test_another_visitors_own_task_gives_no_label_mapping_to_a_preview(space, tmp_path):
    """An upload previewed under another visitor's own-task name is previewed as a task of one's own (no guessed
    mapping onto that task's secret labels); the task's owner still gets the mapping."""
    from gradio_client import handle_file

    secret = space.runs / "bob-secret"
    shutil.copytree(space.runs / "bob-run", secret)
    definition = {"name": "secretlabels", "type": "classify", "prompt": "{text}", "labels": ["Negative", "Positive"]}
    update_run(secret, name="bob-secret", task="secretlabels", task_def={**definition, "label_column": "label"})
    upload = tmp_path / "rows.csv"
    upload.write_text("text,label\na,yes\nb,no\n")
    try:
        anon_mapping = space.visitor().predict(
            "secretlabels", handle_file(str(upload)), None, None, None, "", api_name="/preview"
        )[-1]
        assert "Positive" not in str(anon_mapping)  # the labels of a task that is not the visitor's
        bob_mapping = space.visitor("bob").predict(
            "secretlabels", handle_file(str(upload)), None, None, None, "", api_name="/preview"
        )[-1]
        assert "yes=Positive" in str(bob_mapping)
    finally:
        shutil.rmtree(secret)


def test_the_spaces_hf_token_is_out_of_reach_of_every_hub_load_a_visitor_triggers(space):
    """HF_TOKEN may be set on a public Space: the app takes it out of its environment at start, so a model, dataset
    or scorer a visitor names is fetched with no token (huggingface_hub's own lookup finds none)."""
    import os

    from huggingface_hub.utils import get_token

    assert "HF_TOKEN" not in os.environ and get_token() is None


def test_what_a_visitor_names_and_uploads_is_theirs_and_counts_in_their_quota(space, tmp_path):
    """Own tasks, runs and uploads live in the visitor's space: Alice and Bob each train an own task called
    "topics" from an upload and each gets theirs (`alice.topics`, `bob.topics`, no "already defined"); a run name
    another visitor took starts a run of one's own instead of confirming hers; the task file and the upload sit in
    the visitor's folder and count against her disk quota; an anonymous evaluation's upload goes to the shared,
    capped folder."""
    from gradio_client import handle_file

    from llmft.access import VISITORS

    rows = tmp_path / "topics.csv"
    rows.write_text("text,label\n" + "".join(f"{w} item {i},{w}\n" for i in range(12) for w in ("good", "bad")))
    alice, bob = space.visitor("alice"), space.visitor("bob")

    def own(visitor, prompt):
        values = form(
            model=space.ctx.allowed_roots[-1].as_posix(), task="your own task", source="upload",
            upload=handle_file(str(rows)), steps=1, train_samples=8, run_name="mine",
        )  # fmt: skip
        values.update(own_name="topics", own_prompt=prompt, text_column="text", label_column="label")
        said = visitor.predict(*[values[name] for name in space.app.llmft_form_fields], api_name="/train")[0]
        return said

    try:
        assert "alice.mine" in own(alice, "Topic: {text}")
        wait_until(lambda: not space.ctx.jobs.running(), what="alice's run to end", timeout=120)
        assert "bob.mine" in own(bob, "What is this about? {text}")  # her names are not his
        wait_until(lambda: not space.ctx.jobs.running(), what="bob's run to end", timeout=120)
    finally:
        for job in list(space.ctx.jobs.running()):
            space.ctx.jobs.cancel(job.run_name)
    alice_run, bob_run = read_run(space.runs / "alice.mine"), read_run(space.runs / "bob.mine")
    assert (alice_run["task"], bob_run["task"]) == ("alice.topics", "bob.topics")
    assert alice_run["task_def"]["prompt"] == "Topic: {text}" and bob_run["task_def"]["prompt"].startswith("What")
    home = space.runs / VISITORS / "alice"
    assert (home / ".tasks" / "alice.topics.yaml").is_file() and not (space.runs / ".tasks").exists()
    (upload,) = (home / ".uploads").iterdir()
    assert alice_run["config"]["data"] == str(upload) and upload.name.endswith("-topics.csv")

    access, saved = space.ctx.access, space.ctx.access.max_disk_mb
    other = tmp_path / "other.csv"
    other.write_text(rows.read_text() + "spare item,good\n")
    data = ["upload", "", "", handle_file(str(other)), "text", None, "label", ""]
    try:  # the upload counts: with her runs at the quota, a new upload is refused before it is kept
        access.max_disk_mb = sum(f.stat().st_size for f in (space.runs / "alice.mine").rglob("*") if f.is_file())
        access.max_disk_mb /= 2**20
        with pytest.raises(Exception, match="your runs take"):
            alice.predict("alice.mine", 8, 0, "", None, *data, api_name="/evaluate")
        assert len(list((home / ".uploads").iterdir())) == 1
    finally:
        access.max_disk_mb = saved
    anon = space.visitor()
    with pytest.raises(
        Exception
    ) as refused:  # not the demo run's labels: the error names the file, not the server's path
        anon.predict("demo", 8, 0, "", None, *data, api_name="/evaluate")
    assert "other.csv line 2: unknown label 'good'" in str(refused.value) and "/" not in str(refused.value)
    mapped = [*data[:-1], "good=Positive,bad=Negative"]  # mapped onto them, it evaluates
    anon.predict("demo", 8, 0, "", None, *mapped, api_name="/evaluate")
    assert any(p.name.endswith("-other.csv") for p in (space.runs / VISITORS / ".anonymous" / ".uploads").iterdir())
    evaluations = (space.runs / VISITORS / ".anonymous" / "demo" / "evaluations").glob("*/summary.json")
    summary = max(evaluations, key=lambda p: p.stat().st_mtime)  # this one (the module's others evaluate demo too)
    assert (
        json.loads(summary.read_text())["data"].endswith("-other.csv") and str(space.runs) not in summary.read_text()
    )
    shown, _ = alice.predict("alice.mine", api_name="/run_details")
    assert "topics.csv" in shown and str(space.runs) not in shown and "/tmp" not in shown


def test_an_abandoned_or_stalled_evaluation_stops_instead_of_holding_the_model(space, monkeypatch):
    """A visitor who closes the page mid-evaluation frees the model at the next batch (Gradio marks the event
    dead when its stream closes; a plain function would run on for as long as it takes); one that runs past
    `LLMFT_MAX_REQUEST_MINUTES` is stopped with a one-line reason."""
    import time

    import httpx

    from llmft.ui import evaluate as evaluate_tab

    stopped: list[str] = []
    batches = []

    def batches_forever(*args, on_progress, **kwargs):  # an evaluation as long as the visitor keeps waiting
        try:
            for batch in range(600):
                on_progress("generating", batch, 600)
                batches.append(batch)
                time.sleep(0.1)
        except Exception as err:
            stopped.append(str(err))
            raise
        stopped.append("finished")
        raise AssertionError("ran to the end")

    monkeypatch.setattr(evaluate_tab, "evaluate", batches_forever)
    sample = ["the run's test sample", "", "", None, None, None, None, ""]
    fn_index = next(i for i, fn in space.app.fns.items() if fn.api_name == "evaluate")
    session = "abandoning-visitor"
    join = {"data": ["demo", 5, 0, "", None, *sample], "fn_index": fn_index, "session_hash": session}
    assert httpx.post(f"{space.url}gradio_api/queue/join", json=join, timeout=30).status_code == 200
    with httpx.stream("GET", f"{space.url}gradio_api/queue/data", params={"session_hash": session}, timeout=30) as r:
        lines = r.iter_lines()
        while "process_starts" not in next(lines):  # the page watches its evaluation start ...
            pass
        wait_until(lambda: len(batches) >= 5, what="five batches while the page is open", timeout=30)
        assert not stopped  # ... and an open page's evaluation goes on
    # The page is gone: the evaluation stops at its next batch.
    wait_until(lambda: stopped, what="the abandoned evaluation to stop", timeout=30)
    assert stopped == ["stopped: the page that asked for this has closed"] and len(batches) < 100

    stopped.clear()
    monkeypatch.setenv("LLMFT_MAX_REQUEST_MINUTES", str(2 / 60))  # 2 seconds
    with pytest.raises(Exception, match="stopped: this request ran past this server's limit of 0.0333333 minutes"):
        space.visitor().predict("demo", 5, 0, "", None, *sample, api_name="/evaluate")
    assert stopped and stopped[0].startswith("stopped: this request ran past")
