"""Decoder-only LLMs (the causal-LM kind) on tiny Llama- and GPT-2-style models built from configs, with the
MiniLM tokenizer given a ChatML chat template. Run: pytest tests/test_llm.py"""

import json
import random

import pytest
import torch

from llmft import get_task
from llmft.config import EvalConfig
from llmft.context import Context
from llmft.data import load_examples
from llmft.errors import LlmftError
from llmft.evaluation import GenerationSettings
from llmft.export import export_run
from llmft.kinds import CAUSAL_LM, CLASSIFICATION, SEQ2SEQ
from llmft.loading import load_model, task_for_model
from llmft.models import model_config, resolve_target_modules
from llmft.pipeline import evaluate
from llmft.runs import read_run
from llmft.synthetic import build_causal
from llmft.training import TrainConfig, train

ANSWER = "one cat sat on a mat"
"""The constant answer the tiny decoders learn (no repeated word: a 2-layer random model confuses "the ... the")."""
WORDS = "apple river cloud stone music garden window bread light paper".split()
TEXTS = [
    "short one",
    "a much longer conversation about rivers, clouds and the garden behind the old stone house by the hill",
    "#Person1#: hello there. #Person2#: hi, how are you today?",
]


def _generate(loaded, texts, settings, **kwargs):
    """The kind's batched outputs for `texts` (prompts built as training and evaluation build them)."""
    return loaded.task.kind.predict(loaded, texts, settings, **kwargs)


def _constant_rows(path, n, length, seed):
    rng = random.Random(seed)
    rows = [
        {"id": f"{seed}-{i}", "dialogue": " ".join(rng.choice(WORDS) for _ in range(length)), "summary": ANSWER}
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def constant_answers(tmp_path_factory):
    """Varied inputs, one answer: a random decoder cannot produce it; a few LoRA steps can."""
    return _constant_rows(tmp_path_factory.mktemp("const") / "train.jsonl", 64, 12, 0)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Inputs the constant-answer runs never saw (another seed)."""
    return _constant_rows(tmp_path_factory.mktemp("held-out") / "test.jsonl", 12, 12, 7)


def test_the_model_config_decides_the_kind(tiny_llama, tiny_gpt2, tiny_t5, tiny_distilbert):
    dialogue = get_task("dialogue")
    assert task_for_model(dialogue, tiny_llama).kind is CAUSAL_LM
    assert task_for_model(dialogue, tiny_gpt2).kind is CAUSAL_LM
    assert task_for_model(dialogue, tiny_t5).kind is SEQ2SEQ
    # An encoder has a causal-LM class in transformers too, but it is not a decoder-only model.
    assert task_for_model(get_task("sentiment"), tiny_llama).kind is CLASSIFICATION
    with pytest.raises(LlmftError, match="a distilbert model cannot generate text"):  # nor is it a seq2seq model
        CAUSAL_LM.for_model(model_config(tiny_distilbert))


def test_loss_is_on_the_answer_tokens_only(tiny_llama):
    loaded = load_model(get_task("dialogue"), tiny_llama)
    task, tok = loaded.task, loaded.tokenizer
    examples = load_examples(task, None, "train")[:3]
    rows = task.kind.features(task, tok, examples, 512, 64)
    for row, ex in zip(rows, examples):
        answer = tok(ex.references[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        n_prompt = len(row["input_ids"]) - len(answer)
        assert row["labels"][:n_prompt] == [-100] * n_prompt  # prompt tokens carry no loss
        assert row["labels"][n_prompt:] == answer == row["input_ids"][n_prompt:]  # the answer, then EOS
        prompt = tok.decode(row["input_ids"][:n_prompt])
        # The chat template wraps the task prompt as the user turn and opens the assistant turn; a BERT
        # tokenizer's [CLS]/[SEP] are not added around it (a real chat tokenizer adds neither).
        assert prompt.startswith("<|im_start|> user") and prompt.rstrip().endswith("<|im_start|> assistant")
        assert "[CLS]" not in prompt and "[SEP]" not in prompt
    # The supervised tokens change the loss; the prompt tokens do not.
    batch = task.kind.collator(tok, loaded.model)([rows[0]])
    masked = loaded.model(**batch).loss
    batch["input_ids"][0, 2] = (batch["input_ids"][0, 2] + 1) % 1000  # a prompt token's target
    relabeled = batch["labels"].clone()
    relabeled[0, 3] = batch["input_ids"][0, 3]
    assert loaded.model(**{**batch, "labels": relabeled}).loss != masked


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_training_computes_logits_for_the_answer_only_with_the_same_loss_and_gradients(arch, request):
    """A training batch asks the output head for the positions from the first answer token on: the loss and
    every gradient equal those of the full forward pass, with fewer logits."""
    loaded = load_model(get_task("dialogue"), request.getfixturevalue(arch))
    task, tok, model = loaded.task, loaded.tokenizer, loaded.model
    examples = load_examples(task, None, "train")[:4]
    batch = task.kind.collator(tok, model)(task.kind.features(task, tok, examples, 512, 64))
    trimmed = task.kind.training_batch(batch)
    assert trimmed["labels"].shape[1] < batch["labels"].shape[1]  # the prompt positions are gone

    def loss_and_grads(inputs):
        model.zero_grad()
        torch.manual_seed(0)  # GPT-2's dropout: the same masks in both passes
        out = model(**inputs)
        out.loss.backward()
        return out, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    model.train()
    full, full_grads = loss_and_grads(batch)
    less, less_grads = loss_and_grads(trimmed)
    assert less.logits.shape[1] == trimmed["labels"].shape[1] < full.logits.shape[1]
    assert torch.allclose(less.loss, full.loss, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(less_grads, full_grads))


def test_long_inputs_are_cut_but_the_assistant_turn_is_kept(tiny_llama):
    loaded = load_model(get_task("dialogue"), tiny_llama)
    task, tok = loaded.task, loaded.tokenizer
    prompt = task.kind.prompts(task, tok, ["word " * 5000], 64)[0]
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert len(ids) <= 64
    assert prompt.endswith("<|im_start|>assistant\n")


def test_plain_prompt_without_a_chat_template(tmp_path):
    model = build_causal(tmp_path / "plain", "llama", chat=False)
    loaded = load_model(get_task("dialogue"), str(model))
    task, tok = loaded.task, loaded.tokenizer
    assert task.kind.run_info(tok) == {"prompt_format": "plain", "chat_template": None}
    prompt = task.kind.prompts(task, tok, ["hello"], 512)[0]
    assert prompt == task.format_prompt("hello")


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_batched_generation_equals_one_at_a_time_and_never_repeats_the_prompt(arch, request):
    loaded = load_model(get_task("dialogue"), request.getfixturevalue(arch))
    settings = GenerationSettings(max_new_tokens=10, batch_size=8)
    batched = _generate(loaded, TEXTS, settings, tuned=False, progress=False)
    single = [_generate(loaded, [t], settings, tuned=False, progress=False)[0] for t in TEXTS]
    assert batched == single
    for out in batched:
        assert out and "summarize the following" not in out.lower() and "<|im_start|>" not in out
    # What makes it hold: left padding. Padded on the right, the short rows continue after pad tokens.
    loaded.tokenizer.padding_side = "right"
    assert _generate(loaded, TEXTS, settings, tuned=False, progress=False) != single


def test_lora_targets_map_onto_decoder_architectures(tiny_llama, tiny_gpt2):
    llama = load_model(get_task("dialogue"), tiny_llama).model
    gpt2 = load_model(get_task("dialogue"), tiny_gpt2).model
    assert resolve_target_modules(llama, ["q", "v"]) == ["q_proj", "v_proj"]
    assert resolve_target_modules(llama, ["q_lin", "v_lin"]) == ["q_proj", "v_proj"]  # DistilBERT's names
    assert resolve_target_modules(gpt2, ["q", "v"]) == ["c_attn"]  # GPT-2's fused Conv1D
    assert resolve_target_modules(gpt2, ["all-linear"]) == ["all-linear"]


@pytest.mark.parametrize("arch,targets", [("tiny_llama", ["q", "v"]), ("tiny_gpt2", ["all-linear"])])
def test_lora_learns_a_constant_answer_and_the_merged_export_reloads_in_plain_transformers(
    arch, targets, request, constant_answers, held_out, runs_dir, tmp_path
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = request.getfixturevalue(arch)
    config = TrainConfig(
        task="dialogue",
        model=model,
        data=constant_answers,
        runs_dir=runs_dir,
        run_name=arch,
        max_steps=60,
        learning_rate=1e-2,
        target_modules=targets,
        max_target_tokens=16,
    )
    info = train(config, show_progress=False)
    run = read_run(info["dir"])
    assert run["kind"] == "causal_lm" and run["prompt_format"] == "chat_template"
    assert "<|im_start|>" in run["chat_template"]
    task = get_task("dialogue")
    loaded = load_model(task, model, info["dir"])
    texts = [ex.text for ex in load_examples(task, held_out)]
    settings = GenerationSettings(max_new_tokens=12)
    base = _generate(loaded, texts, settings, tuned=False, progress=False)
    tuned = _generate(loaded, texts, settings, tuned=True, progress=False)
    assert tuned == [ANSWER] * len(texts)  # learned, and stopped at EOS
    assert all(b != ANSWER for b in base)
    # The evaluation pipeline (base-output cache, scoring, verdict) sees the same outputs.
    result, _ = evaluate(
        Context.create(runs_dir),
        EvalConfig(task="dialogue", run=arch, data=held_out, scorer="minilm", max_new_tokens=12),
        progress=False,
    )
    assert [r["tuned_output"] for r in result.rows] == [ANSWER] * len(texts) and result.kind == "causal_lm"
    assert result.verdict == "better" and result.metrics["rouge1"]["tuned_mean"] == 1.0
    # Compare streams base and tuned as two rows of one batch: the same outputs, token by token.
    *_, last = loaded.task.kind.stream(loaded, texts[0], GenerationSettings(max_new_tokens=12, batch_size=1))
    assert (last["base"]["text"], last["tuned"]["text"]) == (base[0], ANSWER)
    # Base weights untouched: the base rows of the same model give what a fresh base model gives.
    assert _generate(load_model(task, model), texts, settings, tuned=False, progress=False) == base

    out = export_run(arch, tmp_path / "merged", merge=True, runs_dir=runs_dir)
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.padding_side == "left"
    for text, expected in zip(texts[:4], tuned):
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": task.format_prompt(text)}], tokenize=False, add_generation_prompt=True
        )
        enc = tok(prompt, add_special_tokens=False, return_tensors="pt", return_token_type_ids=False)
        with torch.inference_mode():
            ids = plain.generate(**enc, max_new_tokens=12, do_sample=False, eos_token_id=tok.eos_token_id)
        assert tok.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip() == expected


def test_bfloat16_generation_on_a_decoder(tiny_llama):
    loaded = load_model(get_task("dialogue"), tiny_llama, dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    out = _generate(loaded, TEXTS, GenerationSettings(max_new_tokens=6), tuned=False, progress=False)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)


def test_classification_with_a_decoder_model_trains_a_score_head(tiny_llama, runs_dir):
    config = TrainConfig(
        task="sentiment", model=tiny_llama, runs_dir=runs_dir, run_name="llama-cls", max_steps=4, train_samples=32
    )
    info = train(config, show_progress=False)
    assert info["status"] == "completed" and info["kind"] == "classification"
    loaded = load_model(get_task("sentiment"), tiny_llama, info["dir"], head_seed=config.seed)
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id
    probs = loaded.task.kind.predict(loaded, TEXTS, GenerationSettings(), tuned=True, progress=False)
    assert len(probs) == 3 and all(abs(sum(p) - 1) < 1e-4 for p in probs)


def test_a_compare_stream_closed_unfinished_stops_generating(tiny_llama, tmp_path):
    """A Compare whose page went away (Gradio stops reading its stream and closes the generator) must not keep the
    model busy to the token cap: the generating thread stops at its next token."""
    import threading
    import time

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmft.inference import GenerationSettings, stream_generate_pair

    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(r=2, task_type="CAUSAL_LM"))
    adapter.save_pretrained(tmp_path / "adapter")
    loaded = load_model(get_task("dialogue"), tiny_llama, str(tmp_path / "adapter"))
    settings = GenerationSettings(max_new_tokens=3000, min_new_tokens=3000)  # minutes of work if nothing stops it
    stream = stream_generate_pair(loaded, "A: hello\nB: hi", settings)
    for _ in range(3):
        shown = next(stream)
    assert 0 < shown["base"]["tokens"] < 3000
    stream.close()
    deadline = time.time() + 2  # the 3000 tokens would take this model over 10 s here
    while any(t.name == "llmft-stream" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "llmft-stream" for t in threading.enumerate())
