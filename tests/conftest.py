"""Shared fixtures: tiny models built from real configs, once per session. Run: pytest -q"""

import os

# The suite runs offline: no hub calls, no 25 s connection retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from llmft.synthetic import build_causal, build_distilbert, build_t5  # noqa: E402

# The same examples on every run, so CI is reproducible; HYPOTHESIS_PROFILE=explore searches afresh, longer.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory):
    """A 2-layer, 64-wide FLAN-T5-architecture model with random weights (a local folder)."""
    return str(build_t5(tmp_path_factory.mktemp("tiny-t5"), size="tiny"))


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory):
    return str(build_distilbert(tmp_path_factory.mktemp("tiny-distilbert"), size="tiny"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A 2-layer Llama-architecture decoder (random weights) whose tokenizer has a ChatML chat template."""
    return str(build_causal(tmp_path_factory.mktemp("tiny-llama"), "llama"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """A 2-layer GPT-2 (Conv1D layers, fused c_attn; random weights) with the same chat tokenizer."""
    return str(build_causal(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2"))


@pytest.fixture(scope="session")
def constant_summaries(tmp_path_factory):
    """A learnable seq2seq set: varied inputs, one fixed summary. A random model cannot produce it; a few
    LoRA steps can."""
    rng = random.Random(0)
    words = "apple river cloud stone music garden window bread light paper".split()
    path = tmp_path_factory.mktemp("data") / "constant.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(64):
            text = " ".join(rng.choice(words) for _ in range(12))
            f.write(json.dumps({"id": f"c{i}", "dialogue": text, "summary": "the cat sat on the mat"}) + "\n")
    return str(path)


TOPICS = {
    "Sports": [
        "the team won the match",
        "a late goal decided the game",
        "the striker scored twice",
        "fans cheered the coach",
        "the league final was tense",
        "the runner broke the record",
        "the tennis player served an ace",
        "the referee showed a red card",
    ],
    "Food": [
        "the soup was rich and warm",
        "fresh bread came from the oven",
        "the chef added garlic and basil",
        "dessert was a lemon tart",
        "the pasta sauce simmered slowly",
        "we grilled vegetables for dinner",
        "the cake needed more sugar",
        "spicy noodles filled the bowl",
    ],
    "Tech": [
        "the new phone has a faster chip",
        "the software update fixed the bug",
        "engineers trained a neural network",
        "the laptop battery lasts all day",
        "the server crashed under load",
        "a new programming language was released",
        "the app syncs files to the cloud",
        "the robot learned to grasp objects",
    ],
}


def write_topics(path, n, seed, openers):
    """A 3-class CSV (sentence, topic) of news-like sentences; other `openers` make rows never trained on."""
    import csv

    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["id", "sentence", "topic"])
        writer.writeheader()
        for i in range(n):
            label = rng.choice(sorted(TOPICS))
            writer.writerow(
                {
                    "id": f"{seed}-{i}",
                    "sentence": f"{rng.choice(openers)} {rng.choice(TOPICS[label])}.",
                    "topic": label,
                }
            )
    return str(path)


TOPIC_TASK = """name: topic
type: classify
description: Which topic a news sentence is about.
prompt: "{text}"
text_column: sentence
label_column: topic
model: minilm
presets:
  quick: {max_steps: 40, learning_rate: 0.003, eval_n: 90}
"""
"""A 3-class task file on the packaged MiniLM; its labels come from the training data."""


@pytest.fixture(scope="session")
def topic_data(tmp_path_factory):
    """(task file, training CSV, held-out test CSV) of the 3-class topic task."""
    folder = tmp_path_factory.mktemp("topic")
    (folder / "topic.yaml").write_text(TOPIC_TASK, encoding="utf-8")
    train = write_topics(folder / "train.csv", 240, 1, ["Today,", "Yesterday,", "Honestly,", "Last night,"])
    test = write_topics(folder / "test.csv", 90, 2, ["Reportedly", "This morning", "By all accounts", "Frankly"])
    return str(folder / "topic.yaml"), train, test


@pytest.fixture
def loaded_splits(monkeypatch):
    """The splits training loads data from, in order (a spy on `training.load_examples`)."""
    import llmft.training as training

    splits = []
    real = training.load_examples

    def spy(task, source=None, split="train", *args, **kwargs):
        splits.append(split)
        return real(task, source, split, *args, **kwargs)

    monkeypatch.setattr(training, "load_examples", spy)
    return splits


@pytest.fixture
def runs_dir(tmp_path):
    return str(tmp_path / "runs")


def write_lines(path, lines, encoding="utf-8"):
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return str(path)


def free_port() -> int:
    """A free loopback port (asking a launcher for port 0 does not work for torchrun's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a Space-mode app (tests/test_space.py, tests/test_browser.py) ---------------------------------------------

SPACE_SECRET = "hf_SPACE_OWNER_SECRET_TOKEN"


def session_cookie(username: str) -> str:
    """The `session` cookie of a visitor signed in as `username` (what Gradio's /login/callback stores), signed
    with the app's session key: the real SessionMiddleware reads it and Gradio makes the OAuth profile."""
    import hashlib
    import time
    from base64 import b64encode

    import gradio.oauth
    import itsdangerous

    secret = hashlib.sha256(((gradio.oauth.OAUTH_CLIENT_SECRET or "") + "-v4").encode()).hexdigest()
    info = {
        "access_token": f"hf_oauth_{username}",
        "token_type": "bearer",
        "scope": "openid profile write-repos manage-repos",
        "expires_at": int(time.time()) + 3600,
        "userinfo": {
            "sub": hashlib.md5(username.encode()).hexdigest(),
            "name": username.title(),
            "preferred_username": username,
            "profile": f"https://huggingface.co/{username}",
            "picture": "",
        },
    }
    data = b64encode(json.dumps({"oauth_info": info}).encode())
    return itsdangerous.TimestampSigner(secret).sign(data).decode()


class Space:
    """The Space-mode app under test: its URL, runs home, Blocks and context; `visitor(name)` is a client
    signed in as `name` (None: anonymous)."""

    def __init__(self, url, runs, app):
        self.url, self.runs, self.app = url, Path(runs), app
        self.ctx = app.llmft_context

    def visitor(self, username: str | None = None, **kwargs):
        from gradio_client import Client

        headers = dict(kwargs.pop("headers", {}))
        if username:
            headers["Cookie"] = f"session={session_cookie(username)}"
        return Client(self.url, headers=headers or None, verbose=False, **kwargs)


@pytest.fixture(scope="module")
def space(tmp_path_factory, tiny_distilbert):
    """An app in Space mode (SPACE_ID set) with three finished runs: `demo` (the Space's, public), `alice-run`
    and `bob-run` (private to their owners). `admin` is an admin; the server's HF_TOKEN must never be used."""
    import shutil

    import gradio.oauth

    from llmft.runs import update_run
    from llmft.training import TrainConfig, train
    from llmft.ui import build_app, launch

    runs = tmp_path_factory.mktemp("space-runs")
    train(
        TrainConfig(
            task="sentiment", model=tiny_distilbert, runs_dir=str(runs), run_name="demo", max_steps=2, train_samples=16
        ),
        show_progress=False,
    )
    for owner in ("alice", "bob"):
        shutil.copytree(runs / "demo", runs / f"{owner}-run")
        info = json.loads((runs / f"{owner}-run" / "run.json").read_text())
        update_run(runs / f"{owner}-run", name=f"{owner}-run", config={**info["config"], "owner": owner})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPACE_ID", "someone/llmft")
        mp.setenv("SPACE_AUTHOR_NAME", "someone")
        mp.setenv("LLMFT_ADMINS", "admin")
        mp.setenv("HF_TOKEN", SPACE_SECRET)
        mp.setenv("LLMFT_MAX_HUB_MB", "2000")  # what a Space defaults it to, undone after these tests
        # Gradio's local stand-in for the hub login (it would ask the hub who this machine is logged in as).
        mp.setattr(gradio.oauth, "_get_mocked_oauth_info", lambda: {"userinfo": {}})
        app = build_app(str(runs), model_dirs=[tiny_distilbert])
        assert app.llmft_context.access.space
        _, url, _ = launch(app, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
        yield Space(url, runs, app)
        app.close()
