"""Evidence beyond one verdict: seed groups (--repeat), a leaderboard of runs on one fingerprinted evaluation,
and blind votes. Run: pytest tests/test_evidence.py"""

import csv
import json
from pathlib import Path

import pytest

from llmft import votes
from llmft.cli import main
from llmft.config import EvalConfig
from llmft.context import Context
from llmft.errors import LlmftError
from llmft.leaderboard import common_evaluations, rank
from llmft.pipeline import evaluate
from llmft.results import EvalResult
from llmft.stats import holm, win_rate


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """Two sentiment runs of one config under two seeds (`--repeat 2`), trained once for this module."""
    runs = tmp_path_factory.mktemp("evidence") / "runs"
    code = main(
        [
            "train",
            "--task",
            "sentiment",
            "--model",
            "minilm",
            "--max-steps",
            "30",
            "--val-split",
            "0",
            "--repeat",
            "2",
            "--run-name",
            "rep",
            "--runs-dir",
            str(runs),
        ]
    )
    assert code == 0
    return runs


def test_repeat_trains_one_ordinary_run_per_seed_marked_with_their_group(group):
    infos = {p.name: json.loads((p / "run.json").read_text()) for p in group.iterdir() if p.name.startswith("rep")}
    assert sorted(infos) == ["rep-seed42", "rep-seed43"]
    for name, info in infos.items():
        assert info["status"] == "completed" and (group / name / "adapter").is_dir()
        assert info["config"]["group"] == "rep" and info["config"]["repeat"] == 1
        assert "--repeat" not in info["command"] and "--group rep" in info["command"]
    assert {i["config"]["seed"] for i in infos.values()} == {42, 43}


def test_leaderboard_ranks_the_runs_on_one_evaluation_with_holm_and_the_seed_spread(group, tmp_path, capsys):
    out = tmp_path / "board"
    code = main(
        [
            "leaderboard",
            "--task",
            "sentiment",
            "--runs",
            "rep-seed42,rep-seed43",
            "--n",
            "40",
            "--runs-dir",
            str(group),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["headline"] == "macro_f1" and len(board["rows"]) == 2
    rows = board["rows"]
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["tuned"] >= rows[1]["tuned"]
    assert all(r["tuned"] > r["base"] for r in rows), "30 steps of sentiment training beat the untrained head"
    assert [r["p_holm"] for r in rows] == pytest.approx(holm([r["p_value"] for r in rows]))
    assert rows[0]["vs_best"] is None and rows[1]["vs_best"]["delta"] == pytest.approx(
        rows[1]["tuned"] - rows[0]["tuned"]
    )
    spread = board["groups"][0]
    deltas = [r["delta"] for r in rows]
    assert spread["group"] == "rep" and spread["k"] == 2
    assert spread["mean_delta"] == pytest.approx(sum(deltas) / 2)
    assert spread["sd_across_seeds"] == pytest.approx(abs(deltas[0] - deltas[1]) / 2**0.5)
    assert "seed spread of group rep (2 seeds)" in printed and "Holm-corrected" in printed
    with (out / "leaderboard.csv").open() as f:
        assert [r["run"] for r in csv.DictReader(f)] == [r["run"] for r in rows]
    assert "plotly" in (out / "leaderboard.html").read_text()[:100000].lower()
    # Both runs now hold an evaluation on the same set: the Runs tab ranks them without evaluating again.
    again = common_evaluations([group / "rep-seed42", group / "rep-seed43"])
    assert again is not None and rank(again).rows[0]["run"] == rows[0]["run"]


def test_evaluations_with_different_fingerprints_are_never_ranked_together(group):
    ctx = Context.create(group)
    a = evaluate(ctx, EvalConfig(task="sentiment", run="rep-seed42", n=20, seed=0), progress=False)[0]
    b = evaluate(ctx, EvalConfig(task="sentiment", run="rep-seed43", n=20, seed=1), progress=False)[0]
    assert a.fingerprint["n"] == b.fingerprint["n"] == 20 and a.fingerprint["id"] != b.fingerprint["id"]
    with pytest.raises(LlmftError, match="differ in rows_sha256, seed: they are not ranked together"):
        rank([a, b])
    assert "/" not in a.fingerprint["data"]  # no server path in what is shown or stored


def _evaluation(group) -> Path:
    return sorted((group / "rep-seed42" / "evaluations").iterdir())[-1]


def test_votes_are_blind_until_cast_one_per_voter_and_item_and_tallied_as_scipy_would(group, tmp_path):
    run_dir, folder = group / "rep-seed42", _evaluation(group)
    result = EvalResult.load(folder)
    items = votes.review_items(result.rows, voted=set(), k=6)
    assert len(items) == 6 and len({r["id"] for r in items}) == 6
    ballots = [votes.make_ballot(folder.name, r["id"], r["input"], r["base_output"], r["tuned_output"]) for r in items]
    public = ballots[0].public()
    assert set(public) == {"source", "item", "text", "a", "b"}  # nothing says which side is tuned
    # A voter prefers tuned on 4 items, base on 1 and calls one a tie; one item is re-voted (the newest counts).
    answers = ["tuned", "tuned", "tuned", "base", "tuned", "tie"]
    for ballot, want in zip(ballots, answers):
        choice = want if want == "tie" else (ballot.tuned_is if want == "tuned" else "AB".replace(ballot.tuned_is, ""))
        vote = votes.cast(run_dir, ballot, choice, voter="alice")
        assert vote["outcome"] == want and vote["tuned_was"] == ballot.tuned_is
    votes.cast(run_dir, ballots[5], "both_bad", voter="alice")  # replaces alice's tie
    votes.cast(run_dir, ballots[0], ballots[0].tuned_is, voter="bob")
    (t,) = [t for t in votes.tallies(run_dir) if t["source"] == folder.name]
    expected = win_rate(5, 1, 0, 1)
    assert t["wins"] == 5 and t["losses"] == 1 and t["both_bad"] == 1 and t["ties"] == 0 and t["voters"] == 2
    assert t["ci95"] == pytest.approx(expected["ci95"]) and t["p_value"] == pytest.approx(expected["p_value"])
    # summary.json carries the tally, so Evaluate, Runs and the model card read it.
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["votes"]["wins"] == 5
    assert "tuned preferred in 5 of 6 decided votes" in EvalResult.load(folder).votes_text()
    with pytest.raises(LlmftError, match="a vote is one of"):
        votes.cast(run_dir, ballots[0], "tuned", voter="alice")  # the letter, never the side, is voted


def test_votes_from_two_sources_are_never_mixed_and_export_as_safe_csv(group, tmp_path, capsys):
    run_dir = group / "rep-seed43"
    compare = votes.make_ballot(votes.COMPARE, "abc", '=HYPERLINK("x")', "base says", "tuned says")
    votes.cast(run_dir, compare, compare.tuned_is, voter="=cmd|' /C calc'!A0")
    other = votes.make_ballot("20260101-000000", "7", "text", "b", "t")
    votes.cast(run_dir, other, "tie", voter="carol")
    with pytest.raises(LlmftError, match="never tallied together"):
        votes.tally(votes.read_votes(run_dir))
    assert [t["source"] for t in votes.tallies(run_dir)] == ["20260101-000000", votes.COMPARE]
    assert main(["votes", "--run", "rep-seed43", "--runs-dir", str(group), "--csv", str(tmp_path / "v.csv")]) == 0
    printed = capsys.readouterr().out
    assert "texts typed into Compare: tuned preferred in 1 of 1 decided votes" in printed
    assert "evaluation 20260101-000000: no decided vote yet" in printed
    cells = (tmp_path / "v.csv").read_text()
    assert "'=cmd" in cells and "\n=cmd" not in cells and ",=cmd" not in cells


@pytest.fixture(scope="module")
def app(group):
    from gradio_client import Client

    from llmft.ui import build_app, launch
    from tests.conftest import free_port

    built = build_app(str(group))
    _, url, _ = launch(built, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield Client(url, verbose=False), built
    built.close()


TEST_SAMPLE = ["the run's test sample", "", "", None, None, None, None, ""]


def test_blind_review_in_the_app_hides_the_sides_until_each_vote_and_keeps_the_result(app, group):
    client, built = app
    client.predict("rep-seed43", 12, 3, "", 0, *TEST_SAMPLE, api_name="/evaluate")
    text, a, b, status = client.predict(api_name="/review_next")
    assert text and a is not None and b is not None and "Item 1 of 12" in status
    assert "A was" not in status and "B was" not in status  # no side named before the vote
    ballots = built.llmft_context.ballots
    seen = set()
    for _ in range(10):
        (token,) = [t for t, (ballot, _, _) in ballots._items.items() if ballot.text == text]
        ballot = ballots._items[token][0]
        assert {ballot.a, ballot.b} == {a, b} and ballot.item not in seen
        seen.add(ballot.item)
        text, a, b, status = client.predict(api_name="/review_vote_A")
        assert status.startswith("Recorded: ") and f"(A was {'tuned' if ballot.tuned_is == 'A' else 'base'})" in status
    assert "Item 11 of 12" in status
    source = sorted((group / "rep-seed43" / "evaluations").iterdir())[-1]
    summary = json.loads((source / "summary.json").read_text())
    assert summary["votes"]["total"] == 10 and summary["votes"]["voters"] == 1
    table = client.predict(api_name="/runs")[0]
    row = next(r for r in table["data"] if r[0] == "rep-seed43")
    assert any(f"{source.name}: tuned" in str(cell) or f"{source.name}: 10 undecided" in str(cell) for cell in row)


def test_blind_compare_reveals_the_side_only_after_the_vote(app):
    client, built = app
    a, b, status = client.predict("sentiment", "", "rep-seed42", "A wonderful film.", 64, api_name="/compare_blind")
    assert {a, b} <= {"Positive", "Negative"} and "revealed after your vote" in status
    (ballot, _, voter) = list(built.llmft_context.ballots._items.values())[-1]
    assert voter == "local"
    revealed = client.predict("rep-seed42", api_name="/compare_vote_tie")
    assert f"A was {'tuned' if ballot.tuned_is == 'A' else 'base'}" in revealed
    with pytest.raises(Exception, match="unknown or already answered"):
        client.predict("rep-seed42", api_name="/compare_vote_A")  # one ballot, one vote


def test_runs_tab_ranks_selected_runs_on_their_shared_evaluation(app):
    client, _ = app
    text, table, _plot = client.predict(["rep-seed42", "rep-seed43"], api_name="/rank_runs")
    assert "2 runs on macro_f1" in text and "Holm" in text and "seed spread of group rep" in text
    assert [r[1] for r in table["data"]] and {r[1] for r in table["data"]} == {"rep-seed42", "rep-seed43"}


def test_on_a_space_only_signed_in_visitors_vote_and_each_under_their_own_name():
    from llmft.access import Access, User

    space = Access(space=True)
    with pytest.raises(LlmftError, match="sign in with Hugging Face .* to vote"):
        space.voter(User())
    assert space.voter(User("alice")) == "alice" and Access().voter(User()) == "local"
    box = votes.BallotBox()
    token = box.issue(votes.make_ballot("s", "1", "t", "b", "x"), "/nonexistent", "alice")
    with pytest.raises(LlmftError, match="unknown or already answered"):
        box.answer(token, "A", "mallory")  # a ballot is answered only by the visitor it was shown to


def test_the_model_card_carries_the_blind_votes_and_the_power_line(group):
    from llmft.export import model_card
    from llmft.results import latest_evaluation

    run_dir = group / "rep-seed42"
    info = {**json.loads((run_dir / "run.json").read_text()), "dir": str(run_dir)}
    card = str(model_card(info, latest_evaluation(run_dir), False, votes=votes.tallies(run_dir)))
    assert "## Blind human votes" in card and "tuned preferred in" in card
    assert "Power: smallest difference n=" in card


@pytest.mark.parametrize("scale", [0.0, 1e-12])
def test_an_adapter_that_changes_nothing_is_called_out_in_the_evaluation(tiny_t5, tmp_path, scale):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    from llmft.data import load_examples
    from llmft.evaluation import GenerationSettings, evaluate_pair
    from llmft.loading import load_model
    from llmft.tasks import get_task

    model = get_peft_model(
        AutoModelForSeq2SeqLM.from_pretrained(tiny_t5),
        LoraConfig(task_type="SEQ_2_SEQ_LM", r=4, target_modules=["q", "v"]),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(scale)  # 0: exactly the base; 1e-12: moved, but too little to change an output
    model.save_pretrained(tmp_path / "adapter")
    task = get_task("dialogue")
    loaded = load_model(task, tiny_t5, str(tmp_path / "adapter"))
    examples = load_examples(task, None, "test")[:4]
    result = evaluate_pair(loaded, examples, GenerationSettings(max_new_tokens=8), progress=False)
    expected = (
        "every LoRA B matrix of the adapter is zero" if scale == 0 else "the tuned outputs equal the base's on all 4"
    )
    assert any(expected in w for w in result.warnings), result.warnings


def test_a_short_run_with_warmup_never_keeps_the_step_whose_adapter_has_not_moved(tmp_path):
    from safetensors.torch import load_file

    from llmft.training import TrainConfig, train

    info = train(
        TrainConfig(
            task="sentiment",
            model="minilm",
            runs_dir=str(tmp_path),
            run_name="warm",
            max_steps=5,
            train_samples=100,
            val_split=10,
            eval_steps=1,
            save_steps=1,
            warmup_ratio=0.2,  # step 1 runs at learning rate 0: its adapter is the base model
            time_budget=0,
        ),
        show_progress=False,
    )
    assert [h["step"] for h in info["val_history"]][:1] == [1]  # step 1 was validated...
    assert info["best"]["step"] is not None and info["best"]["step"] > 1  # ...and never kept
    weights = load_file(str(tmp_path / "warm" / "adapter" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)


def test_a_validation_of_an_adapter_that_has_not_moved_is_never_the_best_step(tiny_t5):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, TrainingArguments

    from llmft.training import _trainer_class

    trainer_class = _trainer_class()
    trainer = trainer_class.__new__(trainer_class)
    trainer.model = get_peft_model(  # freshly initialised: LoRA B is zero, the model is the base
        AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), LoraConfig(task_type="SEQ_2_SEQ_LM", target_modules=["q"])
    )
    trainer.args = TrainingArguments(output_dir="unused", metric_for_best_model="eval_loss", greater_is_better=False)
    from transformers import TrainerState

    trainer.state = TrainerState()
    assert trainer._determine_best_metric({"eval_loss": 0.01}, None) is False and trainer.state.best_metric is None
    for name, p in trainer.model.named_parameters():
        if "lora_B" in name:
            p.data.fill_(0.1)  # moved: now its validation may be the best
    assert trainer._determine_best_metric({"eval_loss": 0.01}, None) is True


def test_a_later_step_within_noise_of_the_best_is_kept_and_a_clearly_worse_one_is_not(tiny_t5):
    """The kept step on a small validation set: a later step that scores a little lower than the best, on rows where
    the two steps disagree both ways, is within one standard error of their paired difference and is kept (it has
    trained longer); a later step that only breaks rows the best got right is clearly worse and is not."""
    import numpy as np
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, TrainerState, TrainingArguments

    from llmft.kinds import CLASSIFICATION
    from llmft.tasks import get_task
    from llmft.training import _trainer_class

    trainer_class = _trainer_class()
    trainer = trainer_class.__new__(trainer_class)
    trainer.model = get_peft_model(
        AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), LoraConfig(task_type="SEQ_2_SEQ_LM", target_modules=["q"])
    )
    for name, p in trainer.model.named_parameters():
        if "lora_B" in name:
            p.data.fill_(0.1)  # a trained adapter
    trainer.args = TrainingArguments(
        output_dir="unused", metric_for_best_model="eval_macro_f1", greater_is_better=True, save_strategy="steps"
    )
    trainer.state = TrainerState()
    spec = get_task("sentiment")
    labels = np.array([0, 1] * 20)  # 40 validation rows

    def validate(step: int, wrong: set[int]) -> bool:
        predicted = np.where(np.isin(np.arange(40), list(wrong)), 1 - labels, labels)
        logits = np.eye(2)[predicted]
        trainer.state.global_step = step
        trainer.sample = CLASSIFICATION.validation_sample(spec, logits, labels)
        f1 = float(trainer.sample.statistic(trainer.sample.rows[None])[0])
        return trainer._determine_best_metric({"eval_macro_f1": f1}, None), f1

    best_errors = set(range(8))  # the best step gets 8 rows wrong
    assert validate(2, best_errors)[0] is True and trainer.state.best_global_step == 2
    # Step 4 fixes 3 of them and breaks 4 others: one row worse in all, well inside the noise of 7 disagreements.
    kept, f1 = validate(4, (best_errors - {0, 1, 2}) | {10, 11, 12, 13})
    assert f1 < trainer.state.best_metric
    assert kept is True and trainer.state.best_global_step == 4 and trainer.kept == (4, f1)
    # Step 6 breaks 6 rows the best got right and fixes none: clearly worse, so step 4 stays the kept one.
    kept, _ = validate(6, best_errors | {20, 21, 22, 23, 24, 25})
    assert kept is False and trainer.state.best_global_step == 4
    assert trainer.top[0] == 2  # the best score is still step 2's (early stopping counts from it)
    # Without per-example results (a run selected by its validation loss) only a better score moves the kept step.
    trainer.sample = None
    trainer.state.global_step = 8
    assert trainer._determine_best_metric({"eval_macro_f1": f1 - 1e-6}, None) is False
    assert trainer.state.best_global_step == 4
