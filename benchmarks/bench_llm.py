"""Speed on the real chat LLM (the packaged SmolLM2-135M-Instruct), side by side with what users would run instead.

Run: python -m benchmarks.bench_llm [--n 50] [--steps 8]   (TRL for the training anchor: pip install --no-deps
trl==1.16.0; LLMFT_BENCH_RESUME=FILE keeps each finished step in FILE, so a rerun after a failure runs only the rest)

Each way runs in a fresh process, on the bundled dialogues, with the same model, adapter, greedy settings and
generation cap (the one llmft fits to the training references):
- evaluation of `--n` dialogues, base + tuned + ROUGE + BERTScore (the packaged MiniLM scorer): llmft's
  `evaluate_pair`; the origin notebooks' loop (two model copies, one example at a time, BERTScore's model
  built per call); transformers' batched `generate` written plainly (batches of 32 in input order, left
  padding, the adapter disabled for base). Outputs agreement against llmft is reported.
- training, LoRA SFT with the loss on the answer only, the same rows, LoRA config (r 16, alpha 32, all linear
  layers), steps, batch and learning rate: llmft's `train`; a plain `Trainer` script; TRL's `SFTTrainer` with
  its defaults for prompt-completion data. Real (non-padding) tokens per second and the final loss.
- Compare: time to the first token of both sides and decode tokens/s, on a 250-token dialogue, warm.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import gemm_gflops, in_fresh_process, machine, table, write_result

LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")
LR, BATCH = 3e-3, 8


def _task_rows(n_test: int):
    from llmft.data import load_examples
    from llmft.tasks import get_task

    task = get_task("dialogue")
    return task, load_examples(task, None, "train"), load_examples(task, None, "test")[:n_test]


def _chat_prompts(tokenizer, task, texts):
    """The prompts every way reads: the task prompt as the user turn of the model's chat template."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": task.format_prompt(t)}], tokenize=False, add_generation_prompt=True
        )
        for t in texts
    ]


def llmft_train(runs: str, steps: int, dtype: str = "auto") -> dict:
    from llmft.training import TrainConfig, train

    config = TrainConfig(
        task="dialogue",
        model="smollm2",
        runs_dir=runs,
        run_name="bench",
        max_steps=steps,
        time_budget=0,
        val_split=0,
        batch_size=BATCH,
        learning_rate=LR,
        lora_r=LORA["r"],
        lora_alpha=LORA["lora_alpha"],
        lora_dropout=LORA["lora_dropout"],
        target_modules=[LORA["target_modules"]],
        dtype=dtype,
    )
    info = train(config, show_progress=False)
    losses = [h["loss"] for h in info.get("loss_history", [])]
    return {
        "seconds": info["train_runtime_s"],
        "tokens_per_s": info["tokens_per_s"],
        "final_loss": info["final_loss"],
        "losses": losses,
        "adapter": str(Path(info["dir"]) / "adapter"),
        "cap": info["max_new_tokens"]["value"],
    }


def _sft_rows(tokenizer, task, examples):
    """Prompt-completion rows for TRL, and tokenized rows with the prompt masked for a plain Trainer."""
    prompts = _chat_prompts(tokenizer, task, [ex.text for ex in examples])
    completions = [ex.references[0] + tokenizer.eos_token for ex in examples]
    rows = []
    for prompt, completion in zip(prompts, completions):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": p + c, "attention_mask": [1] * (len(p) + len(c)), "labels": [-100] * len(p) + c})
    return prompts, completions, rows


def _arguments(cls, steps: int, prefix: str):
    """The anchors' TrainingArguments (or TRL's SFTConfig, a subclass): the same steps, batch and rate as llmft."""
    return cls(
        output_dir=tempfile.mkdtemp(prefix=prefix),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
    )


def _trained(trainer) -> dict:
    """Train, then (seconds, real tokens/s, every step's loss, the last step's, and the adapter, saved for the
    held-out loss)."""
    out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    runtime = out.metrics["train_runtime"]
    adapter = tempfile.mkdtemp(prefix="bench-llm-adapter-")
    trainer.model.save_pretrained(adapter)
    return {
        "seconds": runtime,
        "tokens_per_s": trainer.state.num_input_tokens_seen / runtime,
        "final_loss": losses[-1],
        "losses": losses,
        "adapter": adapter,
    }


def heldout_loss(adapter: str | None, n: int) -> float:
    """The mean loss per answer token on `n` held-out dialogues (the test split, each as the chat prompt and its
    reference), read the same way for every way's adapter (None: the base model). A single training step's loss
    is one batch's, and each way draws its batches in its own order; this is the like-for-like measure of what
    the steps taught."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmft.packaged import smollm2_path

    task, _, examples = _task_rows(n)
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    model = (PeftModel.from_pretrained(model, adapter) if adapter else model).eval()
    total, count = 0.0, 0
    for row in _sft_rows(tokenizer, task, examples)[2]:
        labels = torch.tensor([row["labels"]])
        with torch.inference_mode():
            loss = model(input_ids=torch.tensor([row["input_ids"]]), labels=labels).loss
        answer = int((labels[:, 1:] != -100).sum())
        total, count = total + float(loss) * answer, count + answer
    return total / count


def plain_train(steps: int) -> dict:
    """A plain transformers + peft script: the same rows, the prompt masked, Trainer's defaults."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from llmft.packaged import smollm2_path

    task, train_rows, _ = _task_rows(0)
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    _, _, rows = _sft_rows(tokenizer, task, train_rows)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path), LoraConfig(task_type="CAUSAL_LM", **LORA))
    args = _arguments(TrainingArguments, steps, "bench-plain-")
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collator)
    return _trained(trainer)


def trl_train(steps: int) -> dict:
    """TRL's SFTTrainer on prompt-completion rows, its defaults (loss on the completion only)."""
    try:
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        return {"skipped": "trl is not installed: pip install --no-deps trl==1.16.0"}
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmft.packaged import smollm2_path

    task, train_rows, _ = _task_rows(0)
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts, completions, _ = _sft_rows(tokenizer, task, train_rows)
    dataset = Dataset.from_list([{"prompt": p, "completion": c} for p, c in zip(prompts, completions)])
    torch.manual_seed(0)
    args = _arguments(SFTConfig, steps, "bench-trl-")
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
    )
    return _trained(trainer)


def llmft_eval(adapter: str, n: int, cap: int, dtype: str = "auto") -> dict:
    from llmft.evaluation import GenerationSettings, evaluate_pair
    from llmft.loading import load_model
    from llmft.packaged import MINILM, smollm2_path

    task, _, examples = _task_rows(n)
    start = time.perf_counter()
    loaded = load_model(task, smollm2_path(), adapter, dtype=dtype)
    settings = GenerationSettings(max_new_tokens=cap, max_input_tokens=task.max_input_tokens)
    stages: dict[str, float] = {}  # when each stage was first reported: generation ends where scoring begins

    def on_progress(stage, done, total):
        stages.setdefault(stage.split(" ")[0], time.perf_counter())

    result = evaluate_pair(
        loaded, examples, settings, scorer=MINILM, cache_dir=None, progress=False, on_progress=on_progress
    )
    seconds = time.perf_counter() - start
    prompts = loaded.task.kind.prompted(loaded, [ex.text for ex in examples], settings)[0]
    count = lambda texts: sum(len(ids) for ids in loaded.tokenizer(texts, add_special_tokens=False)["input_ids"])  # noqa: E731
    outputs = [[r["base_output"], r["tuned_output"]] for r in result.rows]
    return {
        "seconds": seconds,
        "generation_s": stages["scoring"] - min(v for k, v in stages.items() if k != "scoring"),
        "prompt_tokens": 2 * count(prompts),  # each prompt is read once per side
        "new_tokens": count([o for row in outputs for o in row]) + 2 * len(outputs),  # and each output's end token
        "outputs": outputs,
        "overall": [result.metrics["overall"]["base_mean"], result.metrics["overall"]["tuned_mean"]],
    }


def model_flops() -> dict:
    """SmolLM2's FLOPs per token from its config: `linear` = 2 x its non-embedding linear weights (q, k, v, o, gate,
    up, down in every layer) for one token's forward pass, `head` = 2 x the output head (tied to the embedding).
    Attention's own products (about 4 x layers x context x hidden per token, 3% at these lengths) and LoRA's
    (r 16: 2%) are left out, so the shares below are slight underestimates."""
    from transformers import AutoConfig

    from llmft.packaged import smollm2_path

    c = AutoConfig.from_pretrained(smollm2_path())
    kv = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    weights = c.num_hidden_layers * (
        2 * c.hidden_size**2 + 2 * c.hidden_size * kv + 3 * c.hidden_size * c.intermediate_size
    )
    return {"linear": 2 * weights, "head": 2 * c.vocab_size * c.hidden_size}


def answer_share(n_train: int = 1000) -> float:
    """The share of the training rows' real tokens that are answer tokens (the only ones the head must score)."""
    from transformers import AutoTokenizer

    from llmft.packaged import smollm2_path

    task, rows, _ = _task_rows(0)
    _, _, tokenized = _sft_rows(AutoTokenizer.from_pretrained(smollm2_path()), task, rows[:n_train])
    answer = sum(sum(label != -100 for label in r["labels"]) for r in tokenized)
    return answer / sum(len(r["input_ids"]) for r in tokenized)


def flop_shares(training: dict, evaluation: dict, peaks: dict, answers: float) -> dict:
    """Model FLOP rates as shares of this CPU's measured GEMM peak: training at 2 x forward (the frozen weights
    need activation gradients, not weight gradients; the head only over answer tokens), generation at one
    forward pass per prompt and new token (the head for new tokens only), over the generation seconds alone."""
    f = model_flops()
    train_per_token = 2 * f["linear"] + 2 * f["head"] * answers
    out = {}
    for dtype, peak in peaks.items():
        t, e = training.get(dtype), evaluation.get(dtype)
        if t and "tokens_per_s" in t:
            out[f"training_{dtype}"] = round(t["tokens_per_s"] * train_per_token / 1e9 / peak, 3)
        if e and "generation_s" in e:
            flops = f["linear"] * (e["prompt_tokens"] + e["new_tokens"]) + f["head"] * e["new_tokens"]
            out[f"generation_{dtype}"] = round(flops / e["generation_s"] / 1e9 / peak, 3)
    return out


def _score(outputs_by_side, refs):
    """ROUGE-1/2/L and BERTScore-F1 as the origin computed them (bert_score builds its model per call)."""
    import bert_score
    from rouge_score import rouge_scorer

    from llmft.packaged import minilm_path

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    means = []
    for outs in outputs_by_side:
        rouge = [scorer.score(r, o) for r, o in zip(refs, outs)]
        f1 = bert_score.score([o or "." for o in outs], refs, model_type=minilm_path(), num_layers=6)[2]
        per = [
            (x["rouge1"].fmeasure + x["rouge2"].fmeasure + x["rougeL"].fmeasure + float(b)) / 4
            for x, b in zip(rouge, f1)
        ]
        means.append(sum(per) / len(per))
    return means


def origin_eval(adapter: str, n: int, cap: int) -> dict:
    """The origin notebooks' loop: base and tuned as two model copies, one `generate` per example and model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmft.packaged import smollm2_path

    task, _, examples = _task_rows(n)
    start = time.perf_counter()
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), adapter).eval()
    outputs = [[], []]
    for prompt in _chat_prompts(tokenizer, task, [ex.text for ex in examples]):
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        for side, model in enumerate((base, tuned)):
            with torch.inference_mode():
                out = model.generate(input_ids=ids, max_new_tokens=cap, do_sample=False)
            outputs[side].append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    overall = _score(outputs, [ex.references[0] for ex in examples])
    return {"seconds": time.perf_counter() - start, "outputs": list(map(list, zip(*outputs))), "overall": overall}


def batched_eval(adapter: str, n: int, cap: int) -> dict:
    """transformers' batched `generate`, written plainly: one model with the adapter, batches of 32 in input
    order, left padding, base with the adapter disabled."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmft.packaged import smollm2_path

    task, _, examples = _task_rows(n)
    start = time.perf_counter()
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), adapter).eval()
    prompts = _chat_prompts(tokenizer, task, [ex.text for ex in examples])
    outputs = [[], []]
    for side in (0, 1):
        for i in range(0, len(prompts), 32):
            enc = tokenizer(prompts[i : i + 32], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                if side == 0:
                    with model.disable_adapter():
                        out = model.generate(**enc, max_new_tokens=cap, do_sample=False)
                else:
                    out = model.generate(**enc, max_new_tokens=cap, do_sample=False)
            new = out[:, enc["input_ids"].shape[1] :]
            outputs[side] += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    overall = _score(outputs, [ex.references[0] for ex in examples])
    return {"seconds": time.perf_counter() - start, "outputs": list(map(list, zip(*outputs))), "overall": overall}


def compare_latency(adapter: str) -> dict:
    """Compare's stream on a ~250-token dialogue, warm: time to the first token of both sides, decode rate."""
    from llmft.inference import GenerationSettings
    from llmft.loading import load_model
    from llmft.packaged import smollm2_path

    task, _, examples = _task_rows(60)
    text = max((ex.text for ex in examples), key=len)
    loaded = load_model(task, smollm2_path(), adapter)
    settings = GenerationSettings(max_new_tokens=32, batch_size=1, max_input_tokens=task.max_input_tokens)
    list(loaded.task.kind.stream(loaded, text, settings))  # warm-up
    runs = []
    for _ in range(3):
        *_, last = loaded.task.kind.stream(loaded, text, settings)
        ttft = max(last["base"]["ttft_s"], last["tuned"]["ttft_s"])
        decode = last["tuned"]["tokens"] / max(last["tuned"]["elapsed_s"] - ttft, 1e-9)
        runs.append((ttft, decode, last["tuned"]["elapsed_s"]))
    best = min(runs)
    prompt = loaded.task.kind.prompted(loaded, [text], settings)[0][0]
    return {
        "prompt_tokens": len(loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]),
        "ttft_both_s": best[0],
        "decode_tokens_per_s": best[1],
        "total_s": best[2],
    }


def decode_step_seconds(adapter: str, sizes=(1, 4, 8, 16, 32), steps: int = 16) -> dict:
    """Seconds of one greedy decode step of the tuned model at each batch size, on the longest test dialogues
    (a prompt read, then `steps` forced tokens, less the prompt read alone): what a row still in the batch
    costs."""
    import torch

    from llmft.inference import GenerationSettings, _encode, _generate_kwargs, _model_inputs
    from llmft.loading import load_model
    from llmft.packaged import smollm2_path

    task, _, examples = _task_rows(60)
    loaded = load_model(task, smollm2_path(), adapter)
    texts = sorted((ex.text for ex in examples), key=len)[-max(sizes) :]
    out = {}
    for size in sizes:
        times = {}
        for new in (1, 1 + steps):
            settings = GenerationSettings(
                max_new_tokens=new, min_new_tokens=new, max_input_tokens=task.max_input_tokens
            )
            prompts, special = loaded.task.kind.prompted(loaded, texts[:size], settings)
            enc = _encode(loaded, prompts, settings, special)
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                with torch.inference_mode():
                    loaded.model.generate(**_model_inputs(enc), **_generate_kwargs(loaded, settings))
                best = min(best, time.perf_counter() - start)
            times[new] = best
        out[size] = (times[1 + steps] - times[1]) / steps
    return out


def early_exit_ceiling(step_s: dict, evaluation: dict) -> dict:
    """What finished rows leaving the batch could save at most: llmft's decode steps with every batch row
    computed until the batch's last row ends (as now), against only the rows still writing (step costs
    interpolated from `step_s`), for the evaluation's own output lengths in llmft's own batches."""
    import numpy as np
    from transformers import AutoTokenizer

    from llmft.inference import GenerationSettings, _length_sorted_batches
    from llmft.packaged import smollm2_path

    step_s = {int(k): v for k, v in step_s.items()}  # JSON from the fresh process has the sizes as text
    sizes = sorted(step_s)
    cost = lambda rows: float(np.interp(rows, sizes, [step_s[k] for k in sizes]))  # noqa: E731
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    task, _, examples = _task_rows(len(evaluation["outputs"]))
    settings = GenerationSettings(max_input_tokens=task.max_input_tokens)
    prompts = _chat_prompts(tokenizer, task, [ex.text for ex in examples])
    batches = _length_sorted_batches(
        tokenizer, prompts, settings.batch_size, settings.max_input_tokens, settings.max_batch_tokens, False
    )
    now = exit_early = 0.0
    for side in (0, 1):
        outputs = tokenizer([row[side] for row in evaluation["outputs"]], add_special_tokens=False)["input_ids"]
        lengths = [len(ids) + 1 for ids in outputs]  # and the end token
        for batch in batches:
            group = [lengths[i] for i in batch]
            for step in range(1, max(group) + 1):
                now += cost(len(group))
                exit_early += cost(sum(n >= step for n in group))
    return {"decode_s_now": round(now, 2), "decode_s_with_early_exit": round(exit_early, 2)}


def llmft_eval_per_row_split(adapter: str, n: int, cap: int) -> dict:
    """Ablation: llmft's evaluation with every batch through peft's per-row path (`adapter_names`), as before a
    batch of one side ran the adapter as it is."""
    from contextlib import contextmanager

    from llmft import models

    @contextmanager
    def rows(self, tuned):
        with self.lock:
            yield {"adapter_names": [models.ADAPTER_NAME if t else models.BASE_ROW for t in tuned]}

    models.LoadedModel.rows = rows
    return llmft_eval(adapter, n, cap)


def llmft_train_all_logits(runs: str, steps: int) -> dict:
    """Ablation: llmft's training with the output head over every position, as before."""
    from llmft.kinds import CausalLM

    CausalLM.training_batch = lambda self, batch: batch
    return llmft_train(runs, steps)


def ablations(adapter: str, n: int, cap: int, steps: int) -> dict:
    """What each speed-up bought: llmft with it (the main run) against llmft without it, fresh processes."""
    here = "benchmarks.bench_llm"
    runs = tempfile.mkdtemp(prefix="bench-llm-ablate-")
    return {
        "eval_per_row_split": in_fresh_process(f"{here}:llmft_eval_per_row_split", adapter=adapter, n=n, cap=cap),
        "train_all_logits": in_fresh_process(f"{here}:llmft_train_all_logits", runs=runs, steps=steps),
        "train_answer_logits": in_fresh_process(f"{here}:llmft_train", runs=runs + "-2", steps=steps),
    }


def agreement(a: list, b: list) -> float:
    pairs = [(x, y) for row_a, row_b in zip(a, b) for x, y in zip(row_a, row_b)]
    return sum(x == y for x, y in pairs) / len(pairs)


def main(n: int = 50, steps: int = 8) -> dict:
    import torch

    from benchmarks.common import RESUME

    # Resuming (LLMFT_BENCH_RESUME) needs the same arguments, the runs home included.
    runs = f"{RESUME}.runs" if RESUME else tempfile.mkdtemp(prefix="bench-llm-")
    here = "benchmarks.bench_llm"
    trained = in_fresh_process(f"{here}:llmft_train", runs=runs, steps=steps)
    training = {
        "llmft": trained,
        "plain_trainer": in_fresh_process(f"{here}:plain_train", steps=steps),
        "trl_sft": in_fresh_process(f"{here}:trl_train", steps=steps),
    }
    heldout = {"base": in_fresh_process(f"{here}:heldout_loss", adapter=None, n=n)}
    for way, r in training.items():
        if "adapter" in r:
            r["heldout_loss"] = heldout[way] = in_fresh_process(f"{here}:heldout_loss", adapter=r["adapter"], n=n)
    adapter, cap = trained["adapter"], trained["cap"]
    ways = {
        w: in_fresh_process(f"{here}:{w}_eval", adapter=adapter, n=n, cap=cap) for w in ("llmft", "origin", "batched")
    }
    bf16 = {
        "training": in_fresh_process(f"{here}:llmft_train", runs=runs + "-bf16", steps=steps, dtype="bfloat16"),
        "eval": in_fresh_process(f"{here}:llmft_eval", adapter=adapter, n=n, cap=cap, dtype="bfloat16"),
    }
    compare = in_fresh_process(f"{here}:compare_latency", adapter=adapter)
    step_s = in_fresh_process(f"{here}:decode_step_seconds", adapter=adapter)
    peaks = {"fp32": gemm_gflops(), "bf16": gemm_gflops(dtype=torch.bfloat16)}
    shares = flop_shares(
        {"fp32": trained, "bf16": bf16["training"]},
        {"fp32": ways["llmft"], "bf16": bf16["eval"]},
        peaks,
        in_fresh_process(f"{here}:answer_share"),
    )
    # The least time reading the dialogue twice (base and tuned) can take at this CPU's GEMM peak.
    compare["prompt_floor_s"] = {
        dtype: round(2 * compare["prompt_tokens"] * model_flops()["linear"] / (peak * 1e9), 3)
        for dtype, peak in peaks.items()
    }
    result = {
        "n": n,
        "steps": steps,
        "max_new_tokens": cap,
        "gemm_fp32_gflops": peaks["fp32"],
        "gemm_bf16_gflops": peaks["bf16"],
        "eval": {
            w: {
                "seconds": round(r["seconds"], 1),
                **({"generation_s": round(r["generation_s"], 1)} if "generation_s" in r else {}),
                "overall": r["overall"],
                "agreement_with_llmft": agreement(r["outputs"], ways["llmft"]["outputs"]),
            }
            for w, r in ways.items()
        },
        "eval_tokens": {k: ways["llmft"][k] for k in ("prompt_tokens", "new_tokens")},
        "training": {w: {k: v for k, v in r.items() if k != "adapter"} for w, r in training.items()},
        "heldout_loss": heldout,
        "bf16": {
            "training": {k: v for k, v in bf16["training"].items() if k != "adapter"},
            "eval": {
                "seconds": round(bf16["eval"]["seconds"], 1),
                "generation_s": round(bf16["eval"]["generation_s"], 1),
                "overall": bf16["eval"]["overall"],
                "agreement_with_fp32": agreement(bf16["eval"]["outputs"], ways["llmft"]["outputs"]),
            },
        },
        "flop_share_of_gemm_peak": shares,
        "decode_step_s": step_s,
        "early_exit_ceiling": early_exit_ceiling(step_s, ways["llmft"]),
        "compare": compare,
    }
    result["eval"]["speedup_vs_origin"] = ways["origin"]["seconds"] / ways["llmft"]["seconds"]
    result["eval"]["speedup_vs_batched"] = ways["batched"]["seconds"] / ways["llmft"]["seconds"]
    print(
        table(
            [
                [w, f"{r['seconds']:.1f}", f"{r['agreement_with_llmft']:.3f}"]
                for w, r in result["eval"].items()
                if isinstance(r, dict)
            ],
            ["evaluation", "seconds", "outputs = llmft's"],
        )
    )
    print(
        table(
            [
                [w, f"{r.get('tokens_per_s', 0):.0f}", r.get("final_loss"), r.get("heldout_loss")]
                for w, r in training.items()
            ],
            ["training", "tokens/s", "final loss", "held-out loss"],
        )
    )
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "heldout_loss",
                    "bf16",
                    "flop_share_of_gemm_peak",
                    "decode_step_s",
                    "early_exit_ceiling",
                    "compare",
                )
            },
            indent=1,
        )
    )
    write_result("llm", {**result, "machine": machine()})
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--steps", type=int, default=8)
    main(**vars(parser.parse_args()))
