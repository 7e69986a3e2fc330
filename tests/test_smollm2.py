"""The real chat LLM, offline: SmolLM2-135M-Instruct from its packaged GGUF, trained a few steps on the bundled
dialogues, then evaluated on held-out bundled dialogues, compared, predicted and exported. One training run
serves every test here.

Run: pytest tests/test_smollm2.py
"""

import json
from pathlib import Path

import pytest
import torch

from llmft.access import User
from llmft.cli import main
from llmft.config import EvalConfig
from llmft.context import Context
from llmft.data import load_examples
from llmft.export import export_run
from llmft.inference import GenerationSettings
from llmft.kinds import prompt_of
from llmft.loading import load_model
from llmft.packaged import SMOLLM2, smollm2_path
from llmft.pipeline import evaluate, open_model
from llmft.runs import read_run
from llmft.tasks import get_task
from llmft.training import TrainConfig, train

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
STEPS = 6
"""Optimizer steps of the shared run: a few, at batch 8 (measured: about 7 s a step on two cores, all-linear)."""
HELD_OUT = 16
"""Held-out bundled test dialogues the run is evaluated on."""


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(runs home, run.json, evaluation result) of a short LoRA run of the real SmolLM2 on the bundled dialogues."""
    runs = tmp_path_factory.mktemp("smollm2-runs")
    config = TrainConfig(
        task="dialogue",
        model=SMOLLM2,
        runs_dir=str(runs),
        run_name="real",
        max_steps=STEPS,
        time_budget=0,
        val_split=0,
        learning_rate=2e-3,
    )
    info = train(config, show_progress=False)
    ctx = Context.create(runs)
    result, _ = evaluate(ctx, EvalConfig(task="dialogue", run="real", n=HELD_OUT, runs_dir=str(runs)), progress=False)
    return runs, info, result


def test_a_few_steps_on_the_real_llm_beat_its_base_on_held_out_dialogues(real):
    runs, info, result = real
    assert info["status"] == "completed" and info["kind"] == "causal_lm" and info["step"] == STEPS
    source = read_run(runs / "real")["base_model_source"]
    assert source["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and source["quantization"] == "Q4_1"
    cap = info["max_new_tokens"]
    assert 8 <= cap["value"] < 128 and result.generation["max_new_tokens"] == cap["value"]  # fitted, both sides
    rouge_l = result.metrics["rougeL"]
    assert rouge_l["tuned_mean"] > rouge_l["base_mean"] + 0.05, rouge_l
    assert result.verdict == "better", result.verdict_text()
    rows = result.rows
    assert all(r["base_output"].strip() and r["tuned_output"].strip() for r in rows)  # real text, both sides
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "smollm2_eval.json").write_text(
        json.dumps(
            {
                "n": result.n,
                "steps": info["step"],
                "train_s": info["duration_s"],
                "max_new_tokens": cap,
                **{m: {k: result.metrics[m][k] for k in ("base_mean", "tuned_mean", "ci95")} for m in result.metrics},
                "verdict": result.verdict,
                "examples": [{k: r[k] for k in ("reference_1", "base_output", "tuned_output")} for r in rows[:3]],
            },
            indent=2,
        )
    )


def test_compare_streams_real_text_for_both_sides(real):
    from llmft.ui.compare import compare

    runs, _, _ = real
    text = load_examples(get_task("dialogue"), None, "test")[0].text
    updates = list(compare(Context.create(runs), User(), "dialogue", "", "real", text, "", 24))
    base, tuned, base_stats, tuned_stats, *_, prompt = updates[-1]
    assert base.strip() and tuned.strip() and base != tuned
    assert len(updates) > 3  # it streamed: several partial updates before the end
    assert "first token" in base_stats and "<|im_start|>assistant" in prompt
    # Each side's time is its own: a side that stopped earlier reports the time it stopped, not the batch's.
    import re

    def tokens_and_total(stats):
        tokens = int(re.match(r"(\d+) tokens", stats).group(1))
        value, unit = re.search(r"total ([\d.]+) (ms|s)", stats).groups()
        return tokens, float(value) / (1000 if unit == "ms" else 1)

    (base_tokens, base_total), (tuned_tokens, tuned_total) = map(tokens_and_total, (base_stats, tuned_stats))
    if tuned_tokens != base_tokens:
        assert (tuned_total < base_total) == (tuned_tokens < base_tokens), (base_stats, tuned_stats)


def test_the_prompt_is_the_same_token_for_token_in_training_evaluation_compare_predict_and_export(
    real, tmp_path, capsys
):
    runs, info, _ = real
    ctx = Context.create(runs)
    loaded, _ = open_model(ctx, get_task("dialogue"), run="real")
    task, tokenizer, kind = loaded.task, loaded.tokenizer, loaded.task.kind
    example = load_examples(task, None, "test")[1]
    settings = GenerationSettings(max_input_tokens=task.max_input_tokens)
    # Training: the features' prompt part (the tokens whose labels are masked).
    row = kind.features(task, tokenizer, [example], task.max_input_tokens, task.max_target_tokens)[0]
    trained = row["input_ids"][: row["labels"].count(-100)]
    # Evaluation and predict build prompts with the kind's `prompts`; Compare with `prompt_of`.
    special = kind.special_tokens(tokenizer)
    prompts = kind.prompts(task, tokenizer, [example.text], task.max_input_tokens)
    evaluated = tokenizer(prompts, add_special_tokens=special)
    compared = tokenizer(prompt_of(loaded, example.text, settings), add_special_tokens=special)
    assert trained == evaluated["input_ids"][0] == compared["input_ids"]
    # The exported folder's own chat template around the task prompt gives the same tokens.
    out = export_run("real", tmp_path / "merged", merge=True, runs_dir=str(runs))
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": task.format_prompt(example.text)}]
    assert exported.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"] == trained
    # predict on the CLI answers for the same text.
    argv = ["predict", "--task", "dialogue", "--run", "real", "--runs-dir", str(runs), "--text", example.text]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("base: ") and "\ntuned: " in printed


def _greedy(model, tokenizer, prompts, n_tokens):
    """Greedy continuations (new tokens only) of chat-templated prompts, one at a time (no padding)."""
    outputs = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=n_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        outputs.append(out[0, ids.shape[1] :].tolist())
    return outputs


def test_merged_and_gguf_exports_reload_in_plain_transformers_with_the_same_greedy_outputs(real, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    runs, _, _ = real
    out = export_run("real", tmp_path / "export", runs_dir=str(runs), gguf=True)
    assert {"model-f16.gguf", "model-q8_0.gguf", "Modelfile", "model.safetensors", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./model-q8_0.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in (out / "README.md").read_text()
    loaded, _ = open_model(Context.create(runs), get_task("dialogue"), run="real")
    texts = [ex.text for ex in load_examples(loaded.task, None, "test")[2:5]]
    settings = GenerationSettings(max_new_tokens=12, max_input_tokens=loaded.task.max_input_tokens)
    prompts = [prompt_of(loaded, t, settings) for t in texts]
    tokenizer = AutoTokenizer.from_pretrained(out)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    from_merged = _greedy(merged, tokenizer, prompts, 12)
    ours = loaded.task.kind.predict(loaded, texts, settings, tuned=True, progress=False)
    assert [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in from_merged] == ours
    f16 = AutoModelForCausalLM.from_pretrained(out, gguf_file="model-f16.gguf", dtype=torch.float32).eval()
    assert _greedy(f16, tokenizer, prompts, 12) == from_merged
    q8 = AutoModelForCausalLM.from_pretrained(out, gguf_file="model-q8_0.gguf", dtype=torch.float32).eval()
    from_q8 = _greedy(q8, tokenizer, prompts, 12)
    agreement = sum(a == b for x, y in zip(from_q8, from_merged) for a, b in zip(x, y)) / sum(map(len, from_merged))
    assert agreement > 0.5, agreement  # q8_0 rounds the weights: most greedy tokens still agree
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "gguf_roundtrip.json").write_text(json.dumps({"f16_equal": True, "q8_0_token_agreement": agreement}))


def test_bf16_and_fp32_greedy_agreement_on_the_real_llm_is_measured(real):
    """bf16 weights against fp32 on the base model: the share of greedy tokens that agree, written down."""
    task = get_task("dialogue")
    texts = [ex.text for ex in load_examples(task, None, "test")[5:9]]
    settings = GenerationSettings(max_new_tokens=16, max_input_tokens=task.max_input_tokens, batch_size=4)
    sides = {}
    for dtype in ("float32", "bfloat16"):
        loaded = load_model(task, smollm2_path(), dtype=dtype)
        prompts = [prompt_of(loaded, t, settings) for t in texts]
        sides[dtype] = _greedy(loaded.model, loaded.tokenizer, prompts, 16)
    pairs = [(a, b) for x, y in zip(sides["float32"], sides["bfloat16"]) for a, b in zip(x, y)]
    agreement = sum(a == b for a, b in pairs) / len(pairs)
    first = sum(x[0] == y[0] for x, y in zip(sides["float32"], sides["bfloat16"])) / len(texts)
    ARTIFACTS.mkdir(exist_ok=True)
    report = {"prompts": len(texts), "tokens": len(pairs), "token_agreement": agreement, "first_token": first}
    (ARTIFACTS / "bf16_agreement.json").write_text(json.dumps(report))
    assert first >= 0.75 and agreement >= 0.4, report


def test_a_script_that_streams_a_compare_to_its_end_exits_cleanly(real):
    """A process that streams base and tuned to the end, then exits, exits with 0. Before, the generating thread
    could still be inside `generate` when the stream ended, and the exiting process aborted ("terminate called
    without an active exception", exit code 134): so did the Compare benchmark."""
    import subprocess
    import sys

    _, info, _ = real
    code = (
        "from llmft.data import load_examples\n"
        "from llmft.inference import GenerationSettings\n"
        "from llmft.loading import load_model\n"
        "from llmft.packaged import smollm2_path\n"
        "from llmft.tasks import get_task\n"
        "task = get_task('dialogue')\n"
        f"loaded = load_model(task, smollm2_path(), {str(Path(info['dir']) / 'adapter')!r})\n"
        "text = load_examples(task, None, 'test')[0].text\n"
        "settings = GenerationSettings(max_new_tokens=8, batch_size=1)\n"
        "*_, last = loaded.task.kind.stream(loaded, text, settings)\n"
        "print('tokens', last['base']['tokens'], last['tuned']['tokens'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3] == "tokens" and int(done.stdout.split()[-1]) > 0
