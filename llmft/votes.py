"""Blind human votes on base vs tuned: ballots that hide which output is which, votes stored with the run, and
their result (tuned's win rate over decided votes, a Wilson interval, a sign test).

A ballot shows two outputs as A and B in a random order; which one is tuned stays with the server (`Ballot`
is never sent to a page, only `Ballot.public()`), and is revealed only by the vote that answers it.

Votes live in `<run>/votes.jsonl`, one JSON line per vote: its source (an evaluation's folder name, or
`compare` for texts typed into Compare), the item (an example id, or the hash of a Compare input), the voter,
the outcome and which letter tuned was. One vote per voter per item and source: a later vote replaces the
earlier one. A tally never mixes sources, so a result row is about one evaluation's examples only.
"""

from __future__ import annotations

import csv
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LlmftError
from .files import csv_safe, write_json_atomic
from .stats import win_rate

VOTES_FILE = "votes.jsonl"
COMPARE = "compare"
"""The source of votes on texts typed into Compare (not an evaluation's examples)."""
CHOICES = {"A": "A is better", "B": "B is better", "tie": "tie", "both_bad": "both bad"}
"""What a voter may answer, and how the page words it."""
OUTCOMES = ("tuned", "base", "tie", "both_bad")
CSV_COLUMNS = ("source", "item", "voter", "outcome", "tuned_was", "at")


@dataclass(frozen=True)
class Ballot:
    """One blind item. `tuned_is` ("A" or "B") stays on the server until the vote is cast."""

    source: str
    item: str
    text: str
    a: str
    b: str
    tuned_is: str

    def public(self) -> dict:
        """What a page or an API client may see before the vote: the input and the two outputs, unlabelled."""
        return {"source": self.source, "item": self.item, "text": self.text, "a": self.a, "b": self.b}


def make_ballot(source: str, item: str, text: str, base_output: str, tuned_output: str) -> Ballot:
    """A ballot with tuned as A or B by a fair coin from the OS's random source (a visitor cannot predict it)."""
    tuned_is = secrets.choice("AB")
    a, b = (tuned_output, base_output) if tuned_is == "A" else (base_output, tuned_output)
    return Ballot(str(source), str(item), text, a, b, tuned_is)


class BallotBox:
    """The ballots a server has handed out and not yet seen answered, by an unguessable token. A page or an
    API client holds only the token; which letter is tuned never leaves the server before the vote. Capped:
    the oldest unanswered ballots are dropped first."""

    def __init__(self, capacity: int = 10_000):
        import threading
        from collections import OrderedDict

        self.capacity, self._items, self._lock = capacity, OrderedDict(), threading.Lock()

    def issue(self, ballot: Ballot, run_dir: str | Path, voter: str) -> str:
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._items[token] = (ballot, Path(run_dir), voter)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return token

    def answer(self, token: str, choice: str, voter: str) -> dict:
        """Cast `voter`'s `choice` on the ballot behind `token` (issued to that voter); returns the vote."""
        with self._lock:
            entry = self._items.get(token) if isinstance(token, str) else None
            if entry is None or entry[2] != voter:
                raise LlmftError("this ballot is unknown or already answered: show the next item")
            outcome_of(entry[0], choice)  # a bad choice keeps the ballot open
            del self._items[token]
        ballot, run_dir, _ = entry
        return cast(run_dir, ballot, choice, voter)


def outcome_of(ballot: Ballot, choice: str) -> str:
    """The vote in terms of the models: `tuned`, `base`, `tie` or `both_bad`."""
    if choice not in CHOICES:
        raise LlmftError(f"a vote is one of {', '.join(CHOICES)}, got {choice!r}")
    if choice in ("A", "B"):
        return "tuned" if choice == ballot.tuned_is else "base"
    return choice


def cast(run_dir: str | Path, ballot: Ballot, choice: str, voter: str) -> dict:
    """Record `voter`'s answer to `ballot` with the run (replacing that voter's earlier vote on the item), then
    refresh the evaluation's summary.json. Returns the vote, which reveals which letter tuned was."""
    from filelock import FileLock

    if not voter:
        raise LlmftError("a vote needs a voter")
    vote = {
        "source": ballot.source,
        "item": ballot.item,
        "voter": voter,
        "outcome": outcome_of(ballot, choice),
        "tuned_was": ballot.tuned_is,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    run_dir = Path(run_dir)
    path = run_dir / VOTES_FILE
    with FileLock(str(path) + ".lock"):
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(vote) + "\n")
        if ballot.source != COMPARE:
            refresh_summary(run_dir, ballot.source)
    return vote


def read_votes(run_dir: str | Path) -> list[dict]:
    """The run's votes, the newest per (source, item, voter), in the order they were first cast. A damaged line
    is skipped (an interrupted append), never fatal."""
    path = Path(run_dir) / VOTES_FILE
    if not path.is_file():
        return []
    latest: dict[tuple, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            vote = json.loads(line)
            key = (vote["source"], vote["item"], vote["voter"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        if vote.get("outcome") in OUTCOMES:
            latest[key] = vote
    return list(latest.values())


def tally(votes: list[dict]) -> dict:
    """The result of votes from one source: `stats.win_rate` of tuned over base, with the ties and "both bad"."""
    sources = {v["source"] for v in votes}
    if len(sources) > 1:
        raise LlmftError(f"votes from different evaluations are never tallied together: {sorted(sources)}")
    count = {o: sum(v["outcome"] == o for v in votes) for o in OUTCOMES}
    result = win_rate(count["tuned"], count["base"], count["tie"], count["both_bad"])
    return {"source": sources.pop() if sources else None, "voters": len({v["voter"] for v in votes}), **result}


def tallies(run_dir: str | Path) -> list[dict]:
    """One tally per source of the run's votes, evaluations first (oldest first), Compare's last."""
    votes = read_votes(run_dir)
    sources = sorted({v["source"] for v in votes}, key=lambda s: (s == COMPARE, s))
    return [tally([v for v in votes if v["source"] == s]) for s in sources]


def refresh_summary(run_dir: Path, source: str) -> None:
    """Write the tally of an evaluation's votes into its summary.json (`votes`)."""
    summary_path = Path(run_dir) / "evaluations" / source / "summary.json"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return  # the evaluation was deleted: its votes stay in votes.jsonl
    summary["votes"] = tally([v for v in read_votes(run_dir) if v["source"] == source])
    write_json_atomic(summary_path, summary)


def source_text(source: str) -> str:
    """Where votes came from, in words."""
    return "texts typed into Compare" if source == COMPARE else f"evaluation {source}"


def tally_text(t: dict | None) -> str:
    """One line: `tuned preferred in 7 of 9 decided votes (78%, 95% CI 45–94%, sign test p = 0.18); 2 ties,
    1 both bad`."""
    if not t or not t.get("total"):
        return "no votes yet"
    counts = f"{t['ties']} tie(s), {t['both_bad']} both bad, {t['voters']} voter(s)"
    if not t["decided"]:
        return f"no decided vote yet ({counts})"
    lo, hi = t["ci95"]
    return (
        f"tuned preferred in {t['wins']} of {t['decided']} decided votes ({t['rate']:.0%}, Wilson 95% CI "
        f"{lo:.0%}–{hi:.0%}, sign test p = {t['p_value']:.2g}); {counts}"
    )


def tally_brief(t: dict) -> str:
    """A tally in a table cell: `tuned 5/6 (83%, 44–97%)`."""
    if not t.get("decided"):
        return f"{t.get('total', 0)} undecided"
    lo, hi = t["ci95"]
    return f"tuned {t['wins']}/{t['decided']} ({t['rate']:.0%}, {lo:.0%}–{hi:.0%})"


def write_csv(run_dir: str | Path, out: str | Path) -> Path:
    """Every current vote of the run as CSV. Cells are written as text a spreadsheet does not run (a leading
    `=`, `+`, `-` or `@` gets a quote)."""
    out = Path(out)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for vote in read_votes(run_dir):
            writer.writerow({k: _cell(vote.get(k, "")) for k in CSV_COLUMNS})
    return out


def _cell(value) -> str:
    return csv_safe(str(value))


def review_items(rows: list[dict], voted: set[str], k: int | None = None) -> list[dict]:
    """An evaluation's rows not yet voted on, in a random order (the OS's random source), at most `k`."""
    rest = [r for r in rows if str(r["id"]) not in voted]
    order = secrets.SystemRandom()
    order.shuffle(rest)
    return rest[:k] if k else rest


def next_ballot(box: BallotBox, run_dir: str | Path, source: str, rows: list[dict], voter: str):
    """The next item of an evaluation's blind review for `voter`, in a random order: (token, what the page
    shows, items voted, items in all), or None once every item has the voter's vote."""
    voted = {v["item"] for v in read_votes(run_dir) if v["source"] == source and v["voter"] == voter}
    rest = review_items(rows, voted, 1)
    if not rest:
        return None
    row = rest[0]
    ballot = make_ballot(source, str(row["id"]), str(row["input"]), str(row["base_output"]), str(row["tuned_output"]))
    done = sum(str(r["id"]) in voted for r in rows)
    return box.issue(ballot, run_dir, voter), ballot.public(), done, len(rows)


def source_tally(run_dir: str | Path, source: str) -> dict:
    """The tally of one source's votes."""
    return tally([v for v in read_votes(run_dir) if v["source"] == source])
