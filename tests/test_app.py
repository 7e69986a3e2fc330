"""The real app on a localhost port, driven through gradio_client. Run: pytest tests/test_app.py"""

import json
import os
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from llmft import LlmftError
from llmft.context import Context
from llmft.packaged import MINILM
from llmft.runs import read_run
from llmft.training import TrainConfig, train
from llmft.ui import build_app, launch
from tests.conftest import free_port

FORM_FIELDS: list[str] = []  # the /train endpoint's inputs, in order: set from the app under test
# /evaluate's data inputs: source, hub id, split, upload, text / reference / label column, label mapping.
TEST_SAMPLE = ["the run's test sample", "", "", None, None, None, None, ""]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_t5, tiny_distilbert, constant_summaries):
    runs = tmp_path_factory.mktemp("app-runs")
    train(TrainConfig(task="sentiment", model=MINILM, runs_dir=str(runs), run_name="ready"), show_progress=False)
    train(
        TrainConfig(
            task="dialogue",
            model=tiny_t5,
            data=constant_summaries,
            runs_dir=str(runs),
            run_name="tiny-dialogue",
            max_steps=40,
            learning_rate=3e-2,
            target_modules=["q", "v"],  # the tiny T5's learning rate is sized for these (the preset: all-linear)
        ),
        show_progress=False,
    )
    # The tiny models live under pytest's temporary folder: the only local folder the app may load from.
    app = build_app(str(runs), model_dirs=[tiny_t5, tiny_distilbert])
    FORM_FIELDS[:] = app.llmft_form_fields
    _, url, _ = launch(app, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield Client(url, verbose=False), runs
    app.close()


def form(
    task="sentiment",
    model="",
    source="bundled sample",
    upload=None,
    text_col=None,
    steps=5,
    run_name="",
    train_samples=32,
    base_dropout=None,
    hub_id="",
    repeat=1,
):
    """The Fine-tune form's values by field name (the form's order comes from the app: `FORM_FIELDS`)."""
    return dict(
        task=task,
        preset="quick",
        model=model,
        text_column=text_col,
        target_columns=None,
        label_column=None,
        label_map="",
        max_steps=steps,
        epochs=None,
        learning_rate=0.002,
        batch_size=8,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.05,
        target_modules="q_lin,v_lin",
        train_samples=train_samples,
        base_dropout=base_dropout,
        group_by_length=False,
        val_split=None,
        val_generate=None,
        eval_steps=None,
        early_stopping=None,
        warmup_ratio=None,
        lr_scheduler=None,
        weight_decay=None,
        grad_accum=None,
        time_budget=None,
        seed=1,
        report_to="none",
        run_name=run_name,
        repeat=repeat,
        source=source,
        hub_id=hub_id,
        upload=upload,
        own_name="",
        own_type="classify",
        own_prompt="{text}",
        own_labels="",
    )


def form_values(**kwargs):
    values = form(**kwargs)
    return [values[name] for name in FORM_FIELDS]


def start_training(client, **kwargs):
    return client.predict(*form_values(**kwargs), api_name="/train")


def wait_for(client, predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = client.predict(api_name="/progress")
        if predicate(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"timed out; last progress: {state[0]}")


def test_compare_sentiment_shows_both_models(served):
    client, _ = served
    base, tuned, base_stats, tuned_stats, base_probs, tuned_probs, scores, prompt = client.predict(
        "sentiment",
        "",
        "ready",
        "What a wonderful film. The acting was superb and the story moving.",
        "Positive",
        64,
        api_name="/compare",
    )
    assert tuned == "Positive" and base in ("Positive", "Negative")
    probs = {c["label"]: c["confidence"] for c in tuned_probs["confidences"]}
    assert probs["Positive"] > 0.8 and abs(sum(probs.values()) - 1) < 1e-4
    assert "ms" in base_stats and "tokens" in tuned_stats
    # MiniLM has no classification head: the base's answer is chance, and Compare says so (on the base side only).
    assert "untrained head" in base_stats and "untrained head" not in tuned_stats
    assert "| correct | " in scores and scores.rstrip().endswith("✓ |")
    assert prompt == "What a wonderful film. The acting was superb and the story moving."  # no template


def test_compare_summaries_stream_and_score(served, constant_summaries):
    client, _ = served
    text = json.loads(Path(constant_summaries).read_text().splitlines()[0])["dialogue"]
    base, tuned, base_stats, tuned_stats, *_, scores, prompt = client.predict(
        "dialogue", "", "tiny-dialogue", text, "the cat sat on the mat", 12, api_name="/compare"
    )
    assert tuned == "the cat sat on the mat" and base != tuned
    assert prompt.startswith("Summarize the following conversation:") and prompt.endswith("Summary:")
    assert "first token" in tuned_stats and "rouge1" in scores


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_compare_rejects_empty_text(served, text):
    client, _ = served
    with pytest.raises(Exception, match="the text is empty"):
        client.predict("sentiment", "", "ready", text, "", 64, api_name="/compare")


def test_tiny_fine_tune_runs_to_completion(served, tiny_distilbert):
    client, runs = served
    message, command, timer, job_name = start_training(
        client, model=tiny_distilbert, steps=6, run_name="ui-run", base_dropout=0.0
    )
    assert job_name == "ui-run"  # what Cancel stops
    assert "ui-run" in message and "python -m llmft train --task sentiment" in command
    assert "--base-dropout 0.0" in command
    state = wait_for(client, lambda s: s[3] == "ui-run")
    assert "completed" in state[0] and "step 6 / 6" in state[0]
    info = json.loads((Path(runs) / "ui-run" / "run.json").read_text())
    assert info["status"] == "completed" and (Path(runs) / "ui-run" / "adapter").is_dir()
    assert info["config"]["base_dropout"] == 0.0
    # The progress timer ticks only while a run is live: switched on by Start, off once the run has ended.
    assert timer["active"] is True and state[-2]["active"] is False and state[-1] == ""


def test_repeat_from_the_form_trains_one_run_per_seed_in_one_group(served, tiny_distilbert):
    client, runs = served
    message, command, _, job_name = start_training(client, model=tiny_distilbert, steps=3, run_name="grp", repeat=2)
    assert job_name == "grp-seed1" and "--run-name grp --repeat 2" in command
    for name in ("grp-seed1", "grp-seed2"):
        deadline = time.time() + 120
        while not (Path(runs) / name / "adapter").is_dir() and time.time() < deadline:
            time.sleep(0.5)
        info = json.loads((Path(runs) / name / "run.json").read_text())
        assert info["status"] == "completed" and info["config"]["group"] == "grp"
    assert {
        json.loads((Path(runs) / n / "run.json").read_text())["config"]["seed"] for n in ("grp-seed1", "grp-seed2")
    } == {1, 2}
    wait_for(client, lambda s: "completed" in s[0])


def test_cancel_stops_a_running_fine_tune_and_blocks_a_second(served, tiny_distilbert):
    client, runs = served
    start_training(client, model=tiny_distilbert, steps=5000, run_name="long", train_samples=0)
    wait_for(client, lambda s: "running" in s[0] and "step 0 /" not in s[0])
    with pytest.raises(Exception, match="a run is in progress \\(long, started"):
        start_training(client, model=tiny_distilbert, steps=5, run_name="second")
    assert "Cancelling" in client.predict(api_name="/cancel")
    state = wait_for(client, lambda s: "cancelled" in s[0], timeout=60)
    assert "long" in state[0]
    info = json.loads((Path(runs) / "long" / "run.json").read_text())
    assert info["status"] == "cancelled" and info["step"] < 5000
    assert not (Path(runs) / "second").exists()


def test_evaluate_returns_summary_and_plots(served):
    client, _ = served
    head, summary, classes, box, proportions, scatter, cm_base, cm_tuned, table, worse, pick, files = client.predict(
        "ready", 40, 0, "", None, *TEST_SAMPLE, api_name="/evaluate"
    )
    classes = classes.get("value", classes)  # an update that also shows the table
    assert [row[0] for row in classes["data"]] == ["Negative", "Positive"]  # the per-class table
    metrics = {row[0].rsplit("(", 1)[-1].rstrip(")"): row for row in summary["data"]}  # "macro-F1 (macro_f1)"
    assert "macro-F1 (macro_f1)" in [row[0] for row in summary["data"]]  # in words, beside the files' name
    assert {"macro_f1", "accuracy", "macro_precision", "macro_recall", "positive_f1", "correct"} <= set(metrics)
    assert float(metrics["macro_f1"][2]) > float(metrics["macro_f1"][1])  # tuned mean > base mean
    assert "**better**" in head and "on macro_f1" in head and "sample" in head
    assert box is not None and "plot" in json.dumps(box)[:100000]
    assert sorted(Path(f).name for f in files) == ["examples.csv", "plots.html", "summary.json"]
    first_id = table["data"][0][0]
    detail = client.predict(first_id, api_name="/example")  # the result stays in this session's state
    assert f"Example {first_id}" in detail
    assert ("<b>Base</b> right" in detail or "<b>Base</b> wrong" in detail) and "<script" not in detail


def test_bad_upload_column_and_oversized_file(served, tmp_path):
    client, _ = served
    good = tmp_path / "reviews.csv"
    good.write_text("review,label\nGreat film,positive\nDull film,negative\n")
    preview, *_ = client.predict("sentiment", handle_file(str(good)), None, None, None, "", api_name="/preview")
    assert preview["headers"] == ["review", "label"]
    with pytest.raises(Exception, match="column 'nope' not found"):
        start_training(client, source="upload", upload=handle_file(str(good)), text_col="nope", run_name="badcol")
    big = tmp_path / "big.csv"
    big.write_bytes(b"text,label\n" + b"x" * (21 * 1024 * 1024) + b",1\n")
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # gradio_client checks first
        client.predict("sentiment", handle_file(str(big)), None, None, None, "", api_name="/preview")
    with open(big, "rb") as f:  # and the server refuses it on its own
        response = httpx.post(client.src + "gradio_api/upload", files={"files": ("big.csv", f)}, timeout=60)
    assert response.status_code == 413 and "maximum allowed size" in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../../etc/passwd",
        "%2e%2e/%2e%2e/etc/passwd",
        "app.py",
        ".git/config",
        "RUNS/ready/run.json",
        "RUNS/ready/adapter/adapter_model.safetensors",
    ],
)
def test_files_outside_the_apps_downloads_are_refused(served, path):
    client, runs = served
    path = path.replace("RUNS", str(runs))
    response = httpx.get(client.src + "gradio_api/file=" + path, timeout=30)
    assert response.status_code in (403, 404), (path, response.status_code)
    assert "root:" not in response.text and "peft_type" not in response.text


def test_the_bundled_sample_ignores_columns_chosen_for_an_earlier_upload(served):
    """Form state follows the data choice: columns picked for an upload never reach a run on the bundled sample."""
    client, runs = served
    values = form(source="bundled sample", steps=1, run_name="sample-after-upload")
    values.update(text_column="sentence", label_column="topic", label_map="a=Positive")  # left from an upload
    message, command, *_ = client.predict(*[values[name] for name in FORM_FIELDS], api_name="/train")
    assert "Started run" in message and "--data sample" in command
    assert "--text-column" not in command and "--label-column" not in command and "--label-map" not in command
    wait_for(client, lambda s: s[3] == "sample-after-upload" or "failed" in s[0], timeout=120)
    assert read_run(Path(runs) / "sample-after-upload")["status"] == "completed"


def test_downloads_are_served(served):
    client, _ = served
    zip_path = client.predict("ready", api_name="/download_adapter")
    assert Path(zip_path).name == "ready-adapter.zip" and Path(zip_path).stat().st_size > 1000
    import zipfile

    with zipfile.ZipFile(zip_path) as archive:  # llmft's model card, not peft's template
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(archive.namelist())
        card = archive.read("README.md").decode()
        peft_config = json.loads(archive.read("adapter_config.json"))
    assert (
        peft_config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    )  # not this machine's path
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    assert "# ready" in card and "| hyperparameter | value |" in card and "[More Information Needed]" not in card
    assert "/tmp/" not in card  # models and data by name, never this machine's paths


def test_local_paths_typed_into_the_app_are_refused(served, tmp_path):
    client, _ = served
    with pytest.raises(Exception, match="outside the folders this server allows; allowed: .* --model-dir"):
        client.predict("sentiment", "/etc", "ready", "good film", "", 8, api_name="/compare")
    with pytest.raises(Exception, match="not a hub dataset id"):
        client.predict(*form_values(source="hub dataset", hub_id="/etc/passwd.csv"), api_name="/train")
    # A relative path looks like owner/name, and would be read from the server's working folder: refused too.
    for near in ("tests/test_app.py", "assets/sentiment", "data/train.csv"):
        with pytest.raises(Exception, match="not a hub dataset id"):
            client.predict(*form_values(source="hub dataset", hub_id=near, run_name="near"), api_name="/train")


def test_evaluation_state_stays_in_its_own_session(served):
    client, _ = served
    other = Client(client.src, verbose=False)  # a second browser session
    table = client.predict("ready", 10, 0, "", None, *TEST_SAMPLE, api_name="/evaluate")[8]
    first_id = table["data"][0][0]
    assert f"Example {first_id}" in client.predict(first_id, api_name="/example")
    try:  # the other session has no result: gradio refuses the id or the handler finds nothing to show
        seen = other.predict(first_id, api_name="/example")
    except Exception as err:
        seen = str(err)
    assert f"Example {first_id}" not in seen and "<b>Base</b>" not in seen


def test_runs_tab_pushes_through_the_hub_api(served, monkeypatch, tmp_path):
    """Uses a LOCAL STAND-IN for the two hub API calls (no hub is reachable here); see test_scaleout.FakeHub."""
    import huggingface_hub

    from tests.test_scaleout import FakeHub

    client, _ = served
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, *a, **k: fake.create_repo(*a, **k))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, *a, **k: fake.upload_folder(*a, **k))
    message = client.predict("ready", "someone/ready", True, False, api_name="/push")
    assert "Pushed run ready to someone/ready" in message
    assert (tmp_path / "hub" / "someone" / "ready" / "adapter_model.safetensors").is_file()
    with pytest.raises(Exception, match="must look like user/name"):
        client.predict("ready", "not a repo", True, False, api_name="/push")


def test_runs_tab_lists_runs_with_details(served):
    client, _ = served
    table, pick, info, _loss, download = client.predict(api_name="/runs")
    names = [row[0] for row in table["data"]]
    assert "ready" in names and pick["value"] in names  # the client returns the picker's update
    assert json.loads(info)["name"] == pick["value"]
    # The picked run's zip is ready with the page, so the Download button saves it in one click.
    with zipfile.ZipFile(download["value"]) as archive:
        assert "adapter_config.json" in archive.namelist() and "README.md" in archive.namelist()
    column = table["headers"].index("model")
    models = {row[0]: row[column] for row in table["data"]}
    assert models["ready"] == "all-MiniLM-L6-v2 (packaged)"


def test_parallel_mixed_compare_and_evaluate_give_the_sequential_outputs(served, constant_summaries):
    """Base and tuned never share mutable state: 8 mixed requests at once equal the same requests one by one."""
    from concurrent.futures import ThreadPoolExecutor

    client, _ = served
    dialogue = json.loads(Path(constant_summaries).read_text().splitlines()[3])["dialogue"]
    requests = [
        (("sentiment", "", "ready", "A moving, wonderful film.", "", 64), "/compare"),
        (("dialogue", "", "tiny-dialogue", dialogue, "", 12), "/compare"),
        (("ready", 24, 0, "", None, *TEST_SAMPLE), "/evaluate"),
        (("sentiment", "", "ready", "Dull, slow and far too long.", "", 64), "/compare"),
        (("tiny-dialogue", 8, 0, "", 12, *TEST_SAMPLE), "/evaluate"),
        (("dialogue", "", "tiny-dialogue", "#Person1#: Hi. #Person2#: Hello there.", "", 12), "/compare"),
        (("ready", 24, 3, "", None, *TEST_SAMPLE), "/evaluate"),
        (("sentiment", "", "ready", "Not bad at all, I smiled throughout.", "", 64), "/compare"),
    ]

    def essence(result, endpoint):
        if endpoint == "/compare":  # both outputs and, for sentiment, both sides' probabilities
            base, tuned, _, _, base_probs, tuned_probs, _, _ = result
            return base, tuned, json.dumps(base_probs, sort_keys=True), json.dumps(tuned_probs, sort_keys=True)
        return json.dumps(result[1], sort_keys=True), json.dumps(result[8], sort_keys=True)  # summary, examples

    def call(request):
        args, endpoint = request
        return essence(Client(client.src, verbose=False).predict(*args, api_name=endpoint), endpoint)

    sequential = [call(r) for r in requests]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(call, requests))
    assert parallel == sequential


def test_own_csv_with_pos_neg_labels_trains_and_evaluates_on_an_uploaded_held_out_file(
    served, tiny_distilbert, tmp_path
):
    client, runs = served
    train_csv, test_csv = tmp_path / "my reviews.csv", tmp_path / "held out.csv"
    words = {"pos": "great lovely superb moving", "neg": "awful dull boring weak"}
    for path, count in ((train_csv, 64), (test_csv, 24)):
        lines = ["review,sentiment"]
        lines += [
            f"{words['pos' if i % 2 else 'neg']} film number {i} of {path.stem},{'pos' if i % 2 else 'neg'}"
            for i in range(count)
        ]
        path.write_text("\n".join(lines) + "\n")
    # The preview guesses the columns from their names; pos/neg need no mapping (unique prefixes of the labels).
    preview, text_col, _, label_col, mapping = client.predict(
        "sentiment", handle_file(str(train_csv)), None, None, None, "", api_name="/preview"
    )
    assert text_col["value"] == "review" and label_col["value"] == "sentiment" and mapping["value"] == ""
    values = dict(
        form(model=tiny_distilbert, source="upload", upload=handle_file(str(train_csv)), steps=30, run_name="own")
    )
    values.update(text_column="review", label_column="sentiment", learning_rate="0.01", train_samples="0")
    client.predict(*[values[name] for name in FORM_FIELDS], api_name="/train")
    wait_for(client, lambda s: s[3] == "own", timeout=180)
    data = ["upload", "", "", handle_file(str(test_csv)), "review", None, "sentiment", ""]
    head, *_ = client.predict("own", 24, 0, "", None, *data, api_name="/evaluate")
    assert "**held out.csv**" in head and "/tmp" not in head and "uploads" not in head
    (summary,) = (Path(runs) / "own" / "evaluations").glob("*/summary.json")
    saved = json.loads(summary.read_text())
    assert saved["data"].endswith("held out.csv") and saved["headline"] == "macro_f1" and saved["verdict"]
    table, *_ = client.predict(api_name="/runs")
    row = next(r for r in table["data"] if r[0] == "own")
    assert "my reviews.csv" in row and any("held out.csv" in str(cell) for cell in row)


def test_delete_asks_first_and_a_second_confirmation_deletes_nothing_else(served):
    from llmft.access import LOCAL_USER
    from llmft.ui import runs_tab

    _, runs = served
    ctx = Context.create(runs)
    for name in ("keep-a", "gone", "keep-b"):
        (Path(runs) / name).mkdir()
        (Path(runs) / name / "run.json").write_text(
            json.dumps({"name": name, "task": "sentiment", "status": "failed"})
        )
    pending, *_ = runs_tab.ask_delete(ctx, LOCAL_USER, "gone")
    assert (Path(runs) / "gone").exists()  # asking deletes nothing
    after = runs_tab.confirm_delete(ctx, LOCAL_USER, pending)
    assert not (Path(runs) / "gone").exists() and after[0] is None  # the pending name is spent
    picker = after[6]
    assert picker["value"] is None  # the selection does not jump to another run
    with pytest.raises(LlmftError, match="nothing to delete"):
        runs_tab.confirm_delete(ctx, LOCAL_USER, after[0])
    assert (Path(runs) / "keep-a").exists() and (Path(runs) / "keep-b").exists()


def test_your_own_task_from_the_form_is_checked_before_anything_starts(served):
    """A bad own task (no placeholder, a built-in name) gets one line; nothing is saved or started."""
    from gradio_client.exceptions import AppError

    client, runs = served
    values = form(task="your own task", run_name="own-bad")
    for own, message in (
        ({"own_name": "mine", "own_prompt": "Classify this."}, "prompt has no placeholder"),
        ({"own_name": "sentiment"}, "built-in task"),
        ({"own_name": ""}, "name must be"),
    ):
        with pytest.raises(AppError, match=message):
            client.predict(*[{**values, **own}[name] for name in FORM_FIELDS], api_name="/train")
    assert not (Path(runs) / "own-bad").exists() and not list((Path(runs) / ".tasks").glob("*.yaml"))


def test_space_front_matter_and_safe_launch_defaults(monkeypatch):
    """The README's front matter has what a Space needs; the app binds loopback unless it runs on a Space."""
    import sys

    import yaml

    root = Path(__file__).resolve().parent.parent
    front = yaml.safe_load((root / "README.md").read_text(encoding="utf-8").split("---")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["python_version"] == "3.11"
    import gradio

    assert front["sdk_version"] == gradio.__version__  # the version the tests ran with
    for key in ("short_description", "license", "models", "datasets", "suggested_hardware", "suggested_storage"):
        assert front[key], key
    assert len(front["short_description"]) <= 60  # the hub refuses longer ones
    assert all(" " in entry and ".safetensors" in entry for entry in front["preload_from_hub"])  # no pickle
    # Sign in with Hugging Face, with the scopes a push into the visitor's own namespace needs.
    assert front["hf_oauth"] is True and {"write-repos", "manage-repos"} <= set(front["hf_oauth_scopes"])

    sys.path.insert(0, str(root))
    import app as app_module

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    assert app_module.parse_args([]).host == "127.0.0.1"
    assert app_module.parse_args(["--auth", "me:secret"]).auth == ("me", "secret")
    with pytest.raises(SystemExit):
        app_module.parse_args(["--auth", "no-password"])
    monkeypatch.setenv("SPACE_ID", "someone/llmft")
    assert app_module.parse_args([]).host == "0.0.0.0"
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_the_form_says_what_training_will_do_before_start_and_refuses_live(served):
    """Before Start, the form says what the preset will do on the chosen data: the rows, the steps (the same count
    training plans: run 'ready' trained the sentiment quick preset on the bundled sample), and where its time budget
    stops it at this server's measured pace. An impossible value is named at once, in one line."""
    client, runs = served
    ready = read_run(Path(runs) / "ready")
    values = form(model="", source="bundled sample", steps=None, train_samples=None)
    values.update(learning_rate="", batch_size="", lora_r="", lora_alpha="", lora_dropout="", target_modules="")
    values.update(base_dropout="", time_budget="")
    said = client.predict(*[values[name] for name in FORM_FIELDS], api_name="/plan")
    planned = ready["time_budget"]["planned_steps"]
    assert f"{ready['train_examples']} training rows" in said and f"{planned} steps" in said, said
    assert "60 s budget" in said
    values.update(learning_rate="5")
    said = client.predict(*[values[name] for name in FORM_FIELDS], api_name="/plan")
    assert said.startswith("⚠") and "lr must be in (0, 1], got 5.0" in said and "\n" not in said
