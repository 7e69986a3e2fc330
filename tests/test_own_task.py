"""The user's own tasks: task files (YAML/JSON), any number of labels, prompts over several columns,
generation metrics chosen per task, and one-line errors for bad files. Run: pytest tests/test_own_task.py"""

import json
import shutil
from pathlib import Path

import pytest
from test_cli import run_cli

from llmft import LlmftError, get_task
from llmft.cli import main
from llmft.data import infer_labels, load_examples
from llmft.runs import read_run
from llmft.tasks import load_task_file


def test_a_three_class_task_file_trains_and_evaluates_from_the_cli(topic_data, tmp_path):
    task_file, train_csv, test_csv = topic_data
    runs = str(tmp_path / "runs")
    moved = shutil.copy(task_file, tmp_path / "my-topic.yaml")
    trained = run_cli("train", "--task", moved, "--data", train_csv, "--run-name", "t3", "--runs-dir", runs)
    assert trained.returncode == 0, trained.stderr
    run = read_run(Path(runs) / "t3")
    assert run["task"] == "topic" and run["task_def"]["labels"] == ["Food", "Sports", "Tech"]  # read from data
    assert (Path(runs) / "t3" / "task.yaml").is_file()
    Path(moved).unlink()  # the run keeps its task: evaluate, predict and export without the file

    out = tmp_path / "eval"
    evaluated = run_cli(
        "evaluate", "--task", "topic", "--run", "t3", "--runs-dir", runs, "--data", test_csv, "--out", str(out)
    )
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == ["Food", "Sports", "Tech"] and summary["n"] == 90
    for side in ("base", "tuned"):
        matrix = summary["confusion_matrix"][side]
        assert len(matrix) == 3 and all(len(row) == 3 for row in matrix) and sum(map(sum, matrix)) == 90
        assert set(summary["per_class"][side]) == {"Food", "Sports", "Tech"}
    assert "positive_f1" not in summary["metrics"]  # no positive class among three
    f1 = summary["metrics"]["macro_f1"]
    assert f1["tuned_mean"] > f1["base_mean"] + 0.3 and summary["verdict"] == "better"
    assert summary["metrics"]["correct"]["test"] == "mcnemar"
    assert "class   support" in evaluated.stdout and "Sports" in evaluated.stdout  # the per-class table

    predicted = run_cli(
        "predict", "--task", "topic", "--run", "t3", "--runs-dir", runs, "--text", "Frankly the striker scored twice."
    )
    assert predicted.returncode == 0, predicted.stderr
    assert "tuned: Sports (Food" in predicted.stdout

    resumed = run_cli("train", "--task", "topic", "--resume", "--run-name", "t3", "--runs-dir", runs)
    assert resumed.returncode == 2 and "already completed" in resumed.stderr  # found by name, file gone

    exported = run_cli("export", "--run", "t3", "--out", str(tmp_path / "export"), "--runs-dir", runs)
    assert exported.returncode == 0, exported.stderr
    card = (tmp_path / "export" / "README.md").read_text()
    assert "| Sports |" in card and "tuned f1" in card


def _write(tmp_path, text, name="task.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


GOOD = "name: {name}\ntype: classify\ntext_column: text\nlabel_column: label\nlabels: [Negative, Positive]\n"


@pytest.mark.parametrize(
    "text,message",
    [
        (GOOD.format(name="bad1") + "colour: red\n", "unknown key 'colour'"),
        (GOOD.format(name="bad2") + "prompt: Classify this review.\n", "prompt has no placeholder"),
        ("name: bad3\ntype: classify\nlabel_column: label\nlabels: [Only]\n", "one label only (Only)"),
        ("name: bad4\ntype: translate\n", "type must be generate or classify"),
        ("name: bad5\ntype: generate\nprompt: '{text} and {context}'\ntarget_columns: [s]\n", "mixes {text}"),
        ("name: bad6\ntype: generate\n", "needs target_columns"),
        ("name: bad7\ntype: generate\ntarget_columns: [s]\nmetrics: [bleu]\n", "unknown metric 'bleu'"),
        ("- a\n- b\n", "expected a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
        ("name: sentiment\ntype: classify\nlabel_column: label\n", "built-in task"),
        (GOOD.format(name="bad8") + "presets: {quick: {steps: 3}}\n", "unknown preset setting 'steps'"),
        (GOOD.format(name="../../etc"), "name must be"),
        (GOOD.format(name="p1") + "presets: {quick: {learning_rate: '0.003'}}\n", "learning_rate must be a number"),
        (GOOD.format(name="p2") + "presets: {quick: {lora_r: 2.5}}\n", "lora_r must be a whole number"),
        (GOOD.format(name="p3") + "presets: {quick: {target_modules: 5}}\n", "target_modules must be module"),
        (GOOD.format(name="p4") + "presets: {quick: {eval_n: all}}\n", "eval_n must be a whole number"),
        ("name: leak1\ntype: classify\ntext_column: topic\nlabel_column: topic\n", "the column the model must"),
        ("name: leak2\ntype: classify\nprompt: '{s} [{topic}]'\nlabel_column: topic\n", "the column the model"),
        ("name: empty\ntype: classify\nlabel_column: l\nlabels: ['', A]\n", "a label is empty"),
        ("name: long\ntype: classify\nlabel_column: l\nprompt: '" + "x" * 30000 + " {text}'\n", "over 20,000"),
    ],
)
def test_bad_task_files_get_one_line_errors(text, message, tmp_path, capsys):
    path = _write(tmp_path, text)
    status = main(["train", "--task", path, "--model", "minilm", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert status == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_data_errors_of_a_task_file_name_the_column(tmp_path, capsys):
    path = _write(tmp_path, "name: needs-topic\ntype: classify\ntext_column: sentence\nlabel_column: topic\n")
    data = tmp_path / "one.csv"
    data.write_text("sentence,topic\na,Food\nb,Food\n", encoding="utf-8")
    assert (
        main(["train", "--task", path, "--model", "minilm", "--data", str(data), "--runs-dir", str(tmp_path / "runs")])
        == 2
    )
    assert "has one label only (Food)" in capsys.readouterr().err
    data.write_text("text,label\na,x\nb,y\n", encoding="utf-8")
    assert (
        main(["train", "--task", path, "--model", "minilm", "--data", str(data), "--runs-dir", str(tmp_path / "runs")])
        == 2
    )
    assert "column 'topic' not found" in capsys.readouterr().err


def test_json_task_files_and_conflicting_definitions(tmp_path):
    spec = {"name": "yesno", "type": "classify", "text_column": "q", "label_column": "a", "labels": ["no", "YES"]}
    task = load_task_file(_write(tmp_path, json.dumps(spec), "yesno.json"))
    assert task.labels == ("no", "YES") and task.kind.name == "classification"  # case kept
    assert get_task(str(tmp_path / "yesno.json")) is task and get_task("yesno") is task
    with pytest.raises(LlmftError, match="a different task called 'yesno'"):
        load_task_file(_write(tmp_path, json.dumps({**spec, "labels": ["no", "maybe", "yes"]}), "other.json"))


def test_labels_read_from_data_keep_case_and_numeric_order(tmp_path):
    task = load_task_file(_write(tmp_path, "name: levels\ntype: classify\nlabel_column: level\n"))
    data = tmp_path / "levels.csv"
    data.write_text("text,level\na,10\nb,2\nc,1\nd,2\n", encoding="utf-8")
    assert infer_labels(task, str(data), "train") == ("1", "2", "10")
    data.write_text("text,level\na,High\nb,low\nc,Mid\n", encoding="utf-8")
    labels = infer_labels(task, str(data), "train")
    assert labels == ("High", "Mid", "low")
    examples = load_examples(task.with_labels(labels), str(data))
    assert [labels[ex.label] for ex in examples] == ["High", "low", "Mid"]
    with pytest.raises(LlmftError, match="lists no labels"):
        load_examples(task, str(data))  # labels unknown until a run reads them


QA_TASK = """name: qa
type: generate
prompt: "Question: {question}\\nContext: {context}\\nAnswer briefly."
target_columns: [answer]
metrics: [exact_match, chrf]
presets:
  quick: {max_steps: 60, learning_rate: 0.01, eval_n: 12}
"""


def test_a_prompt_over_several_columns_with_exact_match_and_chrf(tiny_llama, tmp_path):
    import random

    from llmft.config import EvalConfig
    from llmft.context import Context
    from llmft.pipeline import evaluate
    from llmft.training import TrainConfig, train

    rng = random.Random(0)
    words = "apple river cloud stone music garden window bread light paper".split()

    def rows(n, seed):
        rng.seed(seed)
        return [
            {
                "question": " ".join(rng.choice(words) for _ in range(5)) + "?",
                "context": " ".join(rng.choice(words) for _ in range(8)),
                "answer": "Blue.",
            }
            for _ in range(n)
        ]

    for name, n, seed in (("train.jsonl", 64, 1), ("test.jsonl", 12, 2)):
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in rows(n, seed)) + "\n", encoding="utf-8")
    task_file = _write(tmp_path, QA_TASK, "qa.yaml")
    task = get_task(task_file)
    assert task.input_columns == ("question", "context")
    first = load_examples(task, str(tmp_path / "train.jsonl"))[0]
    assert first.text.startswith("Question: ") and "\nContext: " in first.text and "{" not in first.text

    runs = tmp_path / "runs"
    train(
        TrainConfig(
            task=task_file,
            model=tiny_llama,
            data=str(tmp_path / "train.jsonl"),
            runs_dir=str(runs),
            run_name="qa",
            target_modules=["all-linear"],
        ),
        show_progress=False,
    )
    result, _ = evaluate(
        Context.create(runs), EvalConfig(task="qa", run="qa", data=str(tmp_path / "test.jsonl")), progress=False
    )
    assert set(result.metrics) == {"exact_match", "chrf", "overall"} and result.scorer is None
    assert result.metrics["exact_match"]["tuned_mean"] == 1.0  # "blue" after normalisation
    assert result.metrics["exact_match"]["base_mean"] == 0.0 and result.verdict == "better"


def test_whole_number_labels_are_names_and_case_clashes_are_refused(tmp_path):
    task = load_task_file(_write(tmp_path, "name: stars\ntype: classify\nlabel_column: stars\n"))
    csv = tmp_path / "stars.csv"
    csv.write_text("text,stars\na,1\nb,2\nc,3\nd,3\n", encoding="utf-8")
    jsonl = tmp_path / "stars.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "stars": n}) + "\n" for t, n in zip("abcd", (1, 2, 3, 3))))
    for data in (csv, jsonl):
        labels = infer_labels(task, str(data), "train")
        assert labels == ("1", "2", "3")
        # The rating 3 is the label "3" (id 2), never the id 3 or the label at id 1.
        assert [labels[ex.label] for ex in load_examples(task.with_labels(labels), str(data))] == ["1", "2", "3", "3"]
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("text,stars\na,Food\nb,food\nc,Tech\n", encoding="utf-8")
    with pytest.raises(LlmftError, match="differ only by case"):
        infer_labels(task, str(mixed), "train")
