"""Speed on the real chat LLM (the packaged SmolLM2-135M-Instruct), side by side with what users would run instead.

Run: python -m benchmarks.bench_llm [--n 50] [--steps 8]   (TRL for the training anchor: pip install --no-deps
trl==1.16.0)

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


def llmft_train(runs: str, steps: int) -> dict:
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
    )
    info = train(config, show_progress=False)
    return {
        "seconds": info["train_runtime_s"],
        "tokens_per_s": info["tokens_per_s"],
        "final_loss": info["final_loss"],
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
    """Train, then (seconds, real tokens/s, the last step's loss)."""
    out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    runtime = out.metrics["train_runtime"]
    return {
        "seconds": runtime,
        "tokens_per_s": trainer.state.num_input_tokens_seen / runtime,
        "final_loss": losses[-1],
    }


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


def llmft_eval(adapter: str, n: int, cap: int) -> dict:
    from llmft.evaluation import GenerationSettings, evaluate_pair
    from llmft.loading import load_model
    from llmft.packaged import MINILM, smollm2_path

    task, _, examples = _task_rows(n)
    start = time.perf_counter()
    loaded = load_model(task, smollm2_path(), adapter)
    settings = GenerationSettings(max_new_tokens=cap, max_input_tokens=task.max_input_tokens)
    result = evaluate_pair(loaded, examples, settings, scorer=MINILM, cache_dir=None, progress=False)
    return {
        "seconds": time.perf_counter() - start,
        "outputs": [[r["base_output"], r["tuned_output"]] for r in result.rows],
        "overall": [result.metrics["overall"]["base_mean"], result.metrics["overall"]["tuned_mean"]],
    }


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
    runs = tempfile.mkdtemp(prefix="bench-llm-")
    here = "benchmarks.bench_llm"
    trained = in_fresh_process(f"{here}:llmft_train", runs=runs, steps=steps)
    training = {
        "llmft": trained,
        "plain_trainer": in_fresh_process(f"{here}:plain_train", steps=steps),
        "trl_sft": in_fresh_process(f"{here}:trl_train", steps=steps),
    }
    adapter, cap = trained["adapter"], trained["cap"]
    ways = {
        w: in_fresh_process(f"{here}:{w}_eval", adapter=adapter, n=n, cap=cap) for w in ("llmft", "origin", "batched")
    }
    compare = in_fresh_process(f"{here}:compare_latency", adapter=adapter)
    result = {
        "n": n,
        "steps": steps,
        "max_new_tokens": cap,
        "gemm_fp32_gflops": gemm_gflops(),
        "eval": {
            w: {
                "seconds": round(r["seconds"], 1),
                "overall": r["overall"],
                "agreement_with_llmft": agreement(r["outputs"], ways["llmft"]["outputs"]),
            }
            for w, r in ways.items()
        },
        "training": training,
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
            [[w, f"{r.get('tokens_per_s', 0):.0f}", r.get("final_loss")] for w, r in training.items()],
            ["training", "tokens/s", "final loss"],
        )
    )
    print(json.dumps(compare))
    write_result("llm", {**result, "machine": machine()})
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--steps", type=int, default=8)
    main(**vars(parser.parse_args()))
