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
