"""LoRA training, run directories, cancel/resume, tuned-vs-base on tiny models. Run: pytest tests/test_training.py"""

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmft import LlmftError, get_task
from llmft.data import load_examples
from llmft.evaluation import GenerationSettings, evaluate_pair
from llmft.loading import load_base, load_model
from llmft.models import resolve_target_modules
from llmft.packaged import MINILM, minilm_path
from llmft.runs import list_runs, read_run, update_run
from llmft.training import TrainConfig, train


def _base_weights(path):
    return load_file(str(Path(path) / "model.safetensors"))


def test_training_moves_lora_weights_and_leaves_base_weights_unchanged(tiny_t5, constant_summaries, runs_dir):
    info = train(
        TrainConfig(
            task="dialogue",
            model=tiny_t5,
            data=constant_summaries,
            runs_dir=runs_dir,
            run_name="t5",
            max_steps=8,
            learning_rate=3e-2,
        ),
        show_progress=False,
    )
    adapter = load_file(str(Path(info["dir"]) / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: nonzero means it trained

    loaded = load_model(get_task("dialogue"), tiny_t5, info["dir"])
    original = _base_weights(tiny_t5)
    for name, param in loaded.model.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(param.detach().cpu(), original[key]), name


def _learn_constant_summary(tiny_t5, data, runs_dir, dtype="auto"):
    """40 steps on the constant-summary set: enough for LoRA to learn it."""
    config = TrainConfig(
        task="dialogue",
        model=tiny_t5,
        data=data,
        runs_dir=runs_dir,
        run_name=f"learn-{dtype}",
        max_steps=40,
        learning_rate=3e-2,
        batch_size=8,
        dtype=dtype,
    )
    return train(config, show_progress=False)


def test_seq2seq_fine_tune_beats_base(tiny_t5, constant_summaries, runs_dir):
    task = get_task("dialogue")
    info = _learn_constant_summary(tiny_t5, constant_summaries, runs_dir)
    assert info["dtype"] == "float32" and info["dtype_reason"].startswith("auto: float32")  # the choice, and why
    loaded = load_model(task, tiny_t5, info["dir"])
    examples = load_examples(task, constant_summaries)[:16]
    result = evaluate_pair(loaded, examples, GenerationSettings(max_new_tokens=12), scorer=MINILM, progress=False)
    for metric in ("rouge1", "rougeL", "bertscore_f1", "overall"):
        m = result.metrics[metric]
        assert m["tuned_mean"] > m["base_mean"] + 0.3, (metric, m)
        assert m["ci95"][0] > 0 and m["p_value"] < 0.01
    assert result.scorer.startswith("sentence-transformers/all-MiniLM-L6-v2")


def test_bfloat16_training_and_evaluation(tiny_t5, constant_summaries, runs_dir, tmp_path):
    """bf16 base weights with fp32 LoRA weights: still learns, and bf16 results are kept apart from fp32 ones."""
    task = get_task("dialogue")
    info = _learn_constant_summary(tiny_t5, constant_summaries, runs_dir, dtype="bfloat16")
    assert info["dtype"] == "bfloat16" and info["command"].endswith("--dtype bfloat16")
    assert info["dtype_reason"] == "asked for (bfloat16)"
    adapter = load_file(str(Path(info["dir"]) / "adapter" / "adapter_model.safetensors"))
    assert {v.dtype for v in adapter.values()} == {torch.float32}

    loaded = load_model(task, tiny_t5, info["dir"], dtype="bfloat16")
    assert loaded.dtype == "bfloat16"
    assert {p.dtype for n, p in loaded.model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    examples = load_examples(task, constant_summaries)[:16]
    settings = GenerationSettings(max_new_tokens=12)
    result = evaluate_pair(loaded, examples, settings, scorer=MINILM, progress=False, cache_dir=tmp_path)
    assert result.dtype == "bfloat16"
    m = result.metrics["rougeL"]
    assert m["tuned_mean"] > m["base_mean"] + 0.3, m
    # The fp32 model must not reuse the bf16 base outputs.
    fp32 = load_model(task, tiny_t5, info["dir"])
    again = evaluate_pair(fp32, examples, settings, scorer=MINILM, progress=False, cache_dir=tmp_path)
    assert again.dtype == "float32" and not again.base_outputs_cached


def test_classification_fine_tune_beats_base_on_the_bundled_sample(runs_dir):
    task = get_task("sentiment")
    info = train(
        TrainConfig(task="sentiment", model=MINILM, runs_dir=runs_dir, run_name="sent", max_steps=30),
        show_progress=False,
    )
    assert info["lora_target_modules_resolved"] == ["query", "value"]  # q_lin/v_lin mapped onto BERT
    loaded = load_model(task, info["base_model"], info["dir"], head_seed=info["head_seed"])
    examples = load_examples(task, None, "test")[:80]
    result = evaluate_pair(loaded, examples, progress=False)
    f1 = result.metrics["macro_f1"]
    assert f1["tuned_mean"] >= 0.8 and f1["tuned_mean"] > f1["base_mean"] + 0.2, f1
    assert f1["p_value"] < 0.01 and f1["ci95"][0] > 0
    assert sum(map(sum, result.confusion_matrix["tuned"])) == 80


def test_a_head_peft_cannot_mix_per_row_still_compares_base_and_tuned(runs_dir, tmp_path):
    """RoBERTa's classification head (dense, dropout, out_proj) is not a Linear, so peft refuses to mix base and
    tuned rows in one batch through it: evaluation, the Compare pair and the base rows must still be right."""
    from llmft.synthetic import build_roberta

    task = get_task("sentiment")
    model = str(build_roberta(tmp_path / "roberta"))
    info = train(
        TrainConfig(task="sentiment", model=model, runs_dir=runs_dir, max_steps=20, learning_rate=1e-2, val_split=0),
        show_progress=False,
    )
    loaded = load_model(task, model, info["dir"], head_seed=info["head_seed"])
    assert not loaded.mixes_rows
    texts = [ex.text for ex in load_examples(task, None, "test")[:12]]
    settings = GenerationSettings()
    base = task.kind.predict(loaded, texts, settings, tuned=False, progress=False)
    tuned = task.kind.predict(loaded, texts, settings, tuned=True, progress=False)
    alone = task.kind.predict(
        load_model(task, model, head_seed=info["head_seed"]), texts, settings, tuned=False, progress=False
    )
    assert torch.allclose(torch.tensor(base), torch.tensor(alone), atol=1e-6)  # the base rows are the base model's
    assert not torch.allclose(torch.tensor(tuned), torch.tensor(base), atol=1e-3)  # and the tuned rows are not
    pair = next(task.kind.stream(loaded, texts[0], settings))  # Compare's pair
    assert list(pair["base"]["probs"].values()) == pytest.approx(base[0], abs=1e-6)
    assert list(pair["tuned"]["probs"].values()) == pytest.approx(tuned[0], abs=1e-6)
    result = evaluate_pair(
        loaded, load_examples(task, None, "test")[:16], settings, progress=False, cache_dir=tmp_path
    )
    assert sum(map(sum, result.confusion_matrix["base"])) == sum(map(sum, result.confusion_matrix["tuned"])) == 16


def _bert_without_pooler(tokenizer):
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
    )
    return BertModel(config, add_pooling_layer=False)


def _bart(tokenizer):
    from transformers import BartConfig, BartModel

    config = BartConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
    )
    return BartModel(config)


@pytest.mark.parametrize(
    "build, fresh",
    [
        (_bert_without_pooler, ["classifier", "bert.pooler.dense"]),  # as sentence-transformers exports can be
        (_bart, ["classification_head.dense", "classification_head.out_proj"]),  # a head not named classifier
    ],
)
def test_modules_the_checkpoint_lacks_are_trained_in_full(build, fresh, runs_dir, tmp_path):
    """from_pretrained initialises what the checkpoint has no weights for at random (a BERT's missing pooler,
    BART's classification head): it must train with the head, or the classifier reads a frozen random projection."""
    from llmft.synthetic import _tokenizer

    tokenizer = _tokenizer()
    folder = tmp_path / "model"
    build(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    info = train(
        TrainConfig(
            task="sentiment", model=str(folder), runs_dir=runs_dir, max_steps=10, learning_rate=1e-2, val_split=0
        ),
        show_progress=False,
    )
    assert info["trained_in_full"] == fresh
    saved = load_file(str(Path(info["dir"]) / "adapter" / "adapter_model.safetensors"))
    base = dict(load_base(get_task("sentiment"), str(folder), head_seed=info["head_seed"]).model.named_parameters())
    for module in fresh:
        name = f"{module}.weight"
        trained = next(v for k, v in saved.items() if k.endswith(name))
        assert not torch.allclose(trained, base[name], atol=1e-4), module  # it moved from its random init


def test_the_packaged_minilm_trains_only_its_head_in_full():
    minilm = load_base(get_task("sentiment"), str(minilm_path()))
    assert minilm.fresh_modules == ["classifier"]  # it has its pooler
    assert get_task("sentiment").kind.trained_in_full(minilm.model, minilm.fresh_modules) == ["classifier"]
    assert not hasattr(minilm.model, "llmft_fresh_modules")  # nothing stashed on the model


def test_base_model_is_the_same_at_training_and_evaluation(runs_dir, tiny_distilbert):
    # The classifier head is initialised fresh; the recorded seed must reproduce it exactly.
    task = get_task("sentiment")
    a = load_base(task, tiny_distilbert, head_seed=7).model
    b = load_base(task, tiny_distilbert, head_seed=7).model
    c = load_base(task, tiny_distilbert, head_seed=8).model
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_run_directory_contents(tiny_distilbert, runs_dir):
    info = train(
        TrainConfig(
            task="sentiment",
            model=tiny_distilbert,
            runs_dir=runs_dir,
            run_name="r1",
            max_steps=4,
            train_samples=32,
            lora_r=4,
            base_dropout=0.0,
        ),
        show_progress=False,
    )
    run_dir = Path(info["dir"])
    saved = json.loads((run_dir / "run.json").read_text())
    # 32 drawn rows: 10% (3) held out for validation by default, 29 trained on.
    assert saved["status"] == "completed" and saved["step"] == 4 and saved["train_examples"] == 29
    assert saved["validation"]["examples"] == 3 and "carved from the training data" in saved["validation"]["source"]
    assert saved["config"]["lora_r"] == 4 and saved["base_model"] == tiny_distilbert
    assert saved["data"] == "sample" and saved["versions"]["peft"]
    assert saved["lora_target_modules_resolved"] == ["q_lin", "v_lin"]
    assert len(saved["loss_history"]) == 4 and saved["duration_s"] > 0
    assert "--lora-r 4" in saved["command"] and "--run-name r1" in saved["command"]
    assert saved["config"]["base_dropout"] == 0.0 and "--base-dropout 0.0" in saved["command"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((run_dir / "adapter").glob("*.bin"))
    assert [r["name"] for r in list_runs(runs_dir)] == ["r1"]
    with pytest.raises(LlmftError, match="already exists"):
        train(TrainConfig(task="sentiment", model=tiny_distilbert, runs_dir=runs_dir, run_name="r1", max_steps=1))


@pytest.mark.parametrize(
    "task_name,model", [("dialogue", "tiny_t5"), ("sentiment", "tiny_distilbert"), ("sentiment", MINILM)]
)
def test_base_dropout_zero_makes_training_forward_passes_deterministic(task_name, model, request):
    model = request.getfixturevalue(model) if model.startswith("tiny") else minilm_path()
    task = get_task(task_name)
    enc = {"input_ids": torch.tensor([[101, 2023, 2003, 1037, 3231, 1012, 102] * 4])}
    if task_name == "dialogue":
        enc["decoder_input_ids"] = torch.tensor([[0, 2023, 2003]])

    def two_training_passes(dropout):
        net = load_base(task, model, dropout=dropout).model
        net.train()
        with torch.no_grad():
            return net(**enc).logits, net(**enc).logits, net.config

    a, b, config = two_training_passes(0.0)
    assert torch.equal(a, b)
    assert all(v == 0.0 for k, v in config.to_dict().items() if "dropout" in k and isinstance(v, float))
    a, b, _ = two_training_passes(None)  # the model's own dropout (0.1) is kept by default
    assert not torch.equal(a, b)


def test_target_modules_map_to_the_architecture_or_fail(tiny_distilbert):
    model = load_base(get_task("sentiment"), tiny_distilbert).model
    assert resolve_target_modules(model, ["query", "v"]) == ["q_lin", "v_lin"]
    with pytest.raises(LlmftError, match="match no linear layer"):
        resolve_target_modules(model, ["not_a_layer"])
    # The presets' DistilBERT names on DeBERTa-v2/v3 (query_proj...) and on ModernBERT (one fused Wqkv).
    from transformers import (
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        ModernBertConfig,
        ModernBertForSequenceClassification,
    )

    tiny = dict(vocab_size=64, pad_token_id=0, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    deberta = DebertaV2ForSequenceClassification(DebertaV2Config(**tiny))
    assert resolve_target_modules(deberta, ["q_lin", "v_lin"]) == ["query_proj", "value_proj"]
    modernbert = ModernBertForSequenceClassification(ModernBertConfig(**tiny))
    assert resolve_target_modules(modernbert, ["q_lin", "v_lin"]) == ["Wqkv"]


def test_cancel_stops_within_a_step_and_marks_the_run(tiny_distilbert, runs_dir):
    cancel = threading.Event()
    steps = []

    def on_progress(p):
        steps.append(p.step)
        if p.step == 3:
            cancel.set()

    info = train(
        TrainConfig(
            task="sentiment", model=tiny_distilbert, runs_dir=runs_dir, run_name="c", max_steps=50, train_samples=64
        ),
        on_progress=on_progress,
        cancel=cancel,
        show_progress=False,
    )
    assert info["status"] == "cancelled" and info["step"] == 3 and steps == [1, 2, 3]
    assert not (Path(info["dir"]) / "adapter").exists()  # a cancelled run offers no final adapter


def test_interrupted_run_resumes_from_its_last_checkpoint(tiny_distilbert, runs_dir):
    config = dict(
        task="sentiment",
        model=tiny_distilbert,
        runs_dir=runs_dir,
        run_name="crash",
        max_steps=12,
        train_samples=64,
        save_steps=5,
    )

    def crash(p):
        if p.step == 7:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(TrainConfig(**config), on_progress=crash, show_progress=False)
    run_dir = Path(runs_dir) / "crash"
    assert read_run(run_dir)["status"] == "failed"
    assert (run_dir / "checkpoints" / "checkpoint-5").is_dir() and not (run_dir / "adapter").exists()

    info = train(TrainConfig(**config), resume=True, show_progress=False)
    assert info["status"] == "completed" and info["step"] == 12
    assert [h["step"] for h in info["loss_history"]][-5:] == [8, 9, 10, 11, 12]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_a_run_whose_process_died_reads_as_failed(tiny_distilbert, runs_dir):
    info = train(
        TrainConfig(
            task="sentiment", model=tiny_distilbert, runs_dir=runs_dir, run_name="k", max_steps=1, train_samples=8
        ),
        show_progress=False,
    )
    update_run(Path(info["dir"]), status="running", pid=2**22 + 12345)  # no such process
    assert read_run(Path(info["dir"]))["status"] == "failed"
    assert "interrupted" in read_run(Path(info["dir"]))["error"]


def test_base_outputs_are_cached_across_adapters(tiny_distilbert, runs_dir, tmp_path):
    task = get_task("sentiment")
    examples = load_examples(task, None, "test")[:8]
    results = []
    for name in ("a1", "a2"):
        info = train(
            TrainConfig(
                task="sentiment",
                model=tiny_distilbert,
                runs_dir=runs_dir,
                run_name=name,
                max_steps=2,
                train_samples=16,
                seed=1,
            ),
            show_progress=False,
        )
        loaded = load_model(task, tiny_distilbert, info["dir"], head_seed=1)
        results.append(evaluate_pair(loaded, examples, cache_dir=tmp_path / "cache", progress=False))
    assert [r.base_outputs_cached for r in results] == [False, True]
    assert [r["base_p_Positive"] for r in results[0].rows] == [r["base_p_Positive"] for r in results[1].rows]


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("learning_rate", -1.0, "lr must be in"),
        ("lora_r", 0, "lora-r must be"),
        ("lora_dropout", 1.0, "dropout"),
        ("base_dropout", -0.1, "base-dropout must be in"),
        ("max_steps", 0, "max-steps must be"),
        ("batch_size", 10**6, "batch-size must be"),
        ("run_name", "../evil", "invalid run name"),
        ("dtype", "float16", "dtype must be one of auto, float32, bfloat16"),
    ],
)
def test_absurd_hyperparameters_are_rejected(field, value, message):
    with pytest.raises(LlmftError, match=message):
        TrainConfig(task="sentiment", **{field: value})


def test_bfloat16_on_a_cpu_without_native_bf16_warns_once(monkeypatch, caplog):
    """Emulated bf16 is far slower than fp32 (an AVX2 CPU trained 5 MiniLM steps in 60 s, against 227 in fp32):
    asking for it there says so, once a process; a CPU with native bf16 says nothing."""
    import logging

    from llmft import models

    models._warn_emulated_bf16.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native in (True, False):
        monkeypatch.setattr(models, "native_cpu_bf16", lambda native=native: native)
        with caplog.at_level(logging.WARNING, logger="llmft.models"):
            models.device_and_dtype("bfloat16")
            models.device_and_dtype("bfloat16")
        warnings = [r for r in caplog.records if "no native bf16" in r.getMessage()]
        assert len(warnings) == (0 if native else 1)
    models._warn_emulated_bf16.cache_clear()


def test_the_time_to_go_never_exceeds_what_is_left_of_the_budget(tmp_path):
    """Before the time budget has fitted the steps, the planned steps (the preset's 10 epochs) would say minutes
    to go for a 60-second run, then jump down: the time to go is bounded by what is left of the budget."""
    import time
    from types import SimpleNamespace

    from llmft.callbacks import ProgressCallback
    from llmft.runs import read_run, update_run

    update_run(tmp_path, status="running")
    seen = []
    callback = ProgressCallback(tmp_path, 450, seen.append, None, time.time() - 10, {}, None, budget=60)
    state = SimpleNamespace(global_step=1, max_steps=450, num_input_tokens_seen=0)
    callback.on_log(SimpleNamespace(process_index=0), state, SimpleNamespace(), logs={"loss": 0.7})
    assert 49 <= seen[-1].eta_s <= 50 and read_run(tmp_path)["eta_s"] <= 50  # not 10 s x 449 steps


def test_batches_are_random_unless_grouping_by_length_is_asked_for(tiny_distilbert, runs_dir, monkeypatch):
    """Random batches by default (grouping by length made a short SmolLM2 run learn five times less on held-out
    dialogues, benchmarks/bench_llm.py); `--group-by-length` groups them, with less padding, and run.json says so."""
    from llmft.kinds import CLASSIFICATION

    widths = []
    collator_of = CLASSIFICATION.collator

    def recording(tokenizer, model):
        collate = collator_of(tokenizer, model)

        def collate_and_record(rows):
            batch = collate(rows)
            widths.append((int(batch["attention_mask"].sum()), batch["attention_mask"].numel()))
            return batch

        return collate_and_record

    monkeypatch.setattr(CLASSIFICATION, "collator", recording)
    padding = {}
    for grouped in (False, True):
        widths.clear()
        config = TrainConfig(
            task="sentiment",
            model=tiny_distilbert,
            runs_dir=runs_dir,
            run_name=f"grouped-{grouped}",
            max_steps=8,
            train_samples=64,
            batch_size=8,
            val_split=0,
            group_by_length=grouped,
        )
        info = train(config, show_progress=False)
        real, padded = map(sum, zip(*widths))
        padding[grouped] = 1 - real / padded
        assert info["config"]["group_by_length"] is grouped
        assert ("--group-by-length" in info["command"]) is grouped
    assert padding[True] < 0.75 * padding[False], padding  # measured: 14% against 23% of the batches padding
