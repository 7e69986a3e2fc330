"""Data loading: file formats, column mapping, references, labels, sampling, errors. Run: pytest tests/test_data.py"""

import json

import pandas as pd
import pytest

from llmft import LlmftError, get_task
from llmft.data import load_examples, normalize_label, sample_examples
from tests.conftest import write_lines

SENTIMENT, DIALOGUE = get_task("sentiment"), get_task("dialogue")


def test_formats_load_the_same_examples(tmp_path):
    rows = [{"text": "great film", "label": "Positive"}, {"text": "awful film", "label": 0}]
    frame = pd.DataFrame(rows)
    paths = {
        "jsonl": write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in rows]),
        "json": str(tmp_path / "d.json"),
        "csv": str(tmp_path / "d.csv"),
        "tsv": str(tmp_path / "d.tsv"),
        "parquet": str(tmp_path / "d.parquet"),
    }
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}))
    frame.astype(str).to_csv(paths["csv"], index=False)
    frame.astype(str).to_csv(paths["tsv"], index=False, sep="\t")
    frame.astype(str).to_parquet(paths["parquet"])
    for fmt, path in paths.items():
        examples = load_examples(SENTIMENT, path)
        assert [(e.text, e.label) for e in examples] == [("great film", 1), ("awful film", 0)], fmt


def test_column_mapping(tmp_path):
    path = write_lines(tmp_path / "d.csv", ["review,stars", "nice,positive", "bad,negative"])
    examples = load_examples(SENTIMENT, path, text_column="review", label_column="stars")
    assert [e.label for e in examples] == [1, 0]


def test_numbered_references_are_all_used(tmp_path):
    row = {"dialogue": "#Person1#: hi", "summary1": "a greets b", "summary2": "b is greeted", "summary3": ""}
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(row)])
    (example,) = load_examples(DIALOGUE, path)
    assert example.references == ("a greets b", "b is greeted")
    (example,) = load_examples(DIALOGUE, path, target_columns=["summary2"])
    assert example.references == ("b is greeted",)


@pytest.mark.parametrize(
    "value,expected",
    [(0, 0), (1, 1), ("1", 1), ("positive", 1), ("Negative", 0), (" POSITIVE ", 1), (1.0, 1), (True, 1)],
)
def test_labels_as_ids_or_names(value, expected):
    assert normalize_label(value, ("Negative", "Positive")) == expected


@pytest.mark.parametrize("value", [2, -1, "neutral", "", None, 0.5])
def test_unknown_labels_are_rejected(value):
    with pytest.raises(LlmftError, match="unknown label"):
        normalize_label(value, ("Negative", "Positive"))


def test_unknown_label_names_the_line(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl", [json.dumps({"text": "ok", "label": 1}), json.dumps({"text": "meh", "label": "neutral"})]
    )
    with pytest.raises(LlmftError, match=r"line 2: unknown label 'neutral'"):
        load_examples(SENTIMENT, path)


def test_broken_jsonl_line_is_named(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": "a", "label": 1}), '{"text": "b", "label"'])
    with pytest.raises(LlmftError, match=r"d.jsonl line 2: not valid JSON"):
        load_examples(SENTIMENT, path)


def test_missing_column_lists_the_columns(tmp_path):
    path = write_lines(tmp_path / "d.csv", ["review,label", "nice,1"])
    with pytest.raises(LlmftError, match=r"column 'text' not found in .*d.csv; columns are: label, review"):
        load_examples(SENTIMENT, path)


def test_empty_files_and_rows(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(LlmftError, match="is empty"):
        load_examples(SENTIMENT, str(tmp_path / "empty.csv"))
    header_only = write_lines(tmp_path / "h.csv", ["text,label"])
    with pytest.raises(LlmftError, match="no examples"):
        load_examples(SENTIMENT, header_only)
    blank_text = write_lines(tmp_path / "b.csv", ["text,label", "fine,1", "  ,0"])
    with pytest.raises(LlmftError, match=r"line 3: empty or missing 'text'"):
        load_examples(SENTIMENT, blank_text)


def test_not_utf8_and_html_disguised_as_csv(tmp_path):
    (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(LlmftError, match="not UTF-8"):
        load_examples(SENTIMENT, str(tmp_path / "latin.csv"))
    (tmp_path / "page.csv").write_text("<!DOCTYPE html><html><body>hi</body></html>")
    with pytest.raises(LlmftError, match="looks like HTML"):
        load_examples(SENTIMENT, str(tmp_path / "page.csv"))


def test_missing_file_and_bad_type(tmp_path):
    with pytest.raises(LlmftError, match="data file not found"):
        load_examples(SENTIMENT, str(tmp_path / "nope.csv"))
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(LlmftError, match="unsupported file type .xlsx"):
        load_examples(SENTIMENT, str(tmp_path / "d.xlsx"))


def test_offline_hub_dataset_fails_with_advice():
    with pytest.raises(LlmftError, match="cannot load dataset stanfordnlp/imdb.*--data"):
        load_examples(SENTIMENT, "stanfordnlp/imdb", "test")


def test_hub_dataset_rows_map_like_a_local_file(tmp_path, monkeypatch):
    """The hub path with a local stand-in for the download (these machines cannot reach the hub): the stand-in
    is `datasets` itself reading parquet files laid out like a hub repo, so llmft sees a real `Dataset`."""
    import datasets

    (tmp_path / "data").mkdir()
    pd.DataFrame(
        {
            "dialogue": ["#Person1#: Hi.\n#Person2#: Hello.", "#Person1#: Bye."],
            "summary1": ["They greet.", "One leaves."],
            "summary2": ["A greeting.", "A farewell."],
            "summary3": ["Hello.", "Goodbye."],
        }
    ).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    pd.DataFrame({"text": ["Great film.", "Dull film."], "label": [1, 0]}).to_parquet(
        tmp_path / "data" / "train-00000-of-00001.parquet"
    )
    load = datasets.load_dataset
    calls = []

    def hub_stand_in(path, split=None, **kwargs):
        calls.append((path, split, kwargs))
        files = sorted(str(f) for f in (tmp_path / "data").glob(f"{split}-*.parquet"))
        if not files:
            raise ValueError(f"Unknown split \"{split}\". Should be one of ['test', 'train'].")
        return load("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))

    monkeypatch.setattr(datasets, "load_dataset", hub_stand_in)
    dialogue = load_examples(DIALOGUE, "someone/dialogs", "test")
    assert [e.references for e in dialogue] == [
        ("They greet.", "A greeting.", "Hello."),
        ("One leaves.", "A farewell.", "Goodbye."),
    ]
    assert dialogue[0].text.startswith("#Person1#: Hi.")
    sentiment = load_examples(SENTIMENT, "someone/reviews", "train")
    assert [e.label for e in sentiment] == [1, 0]
    assert calls == [("someone/dialogs", "test", {}), ("someone/reviews", "train", {})]  # no remote-code flags
    with pytest.raises(LlmftError, match="cannot load split 'validation' of dataset someone/dialogs"):
        load_examples(DIALOGUE, "someone/dialogs", "validation")


def test_sampling_is_deterministic_and_seeded():
    examples = load_examples(SENTIMENT, None, "test")
    a, b, c = (sample_examples(examples, 20, seed) for seed in (1, 1, 2))
    assert [e.id for e in a] == [e.id for e in b]
    assert [e.id for e in a] != [e.id for e in c]
    assert len(sample_examples(examples, 10_000, 0)) == len(examples)


def test_rows_of_a_file_without_ids_are_named_by_their_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("text,label\na fine film,Positive\na dull film,Negative\n")
    assert [e.id for e in load_examples(get_task("sentiment"), str(path), "train")] == ["line 2", "line 3"]
