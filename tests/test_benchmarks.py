"""Smoke test: the benchmark scripts run end to end at tiny size. Run: pytest tests/test_benchmarks.py"""

import json

from benchmarks import common, run_all


def test_benchmarks_run_at_tiny_size(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)  # keep the committed base-size results
    results = run_all.main(size="tiny", quick=True)
    assert results["eval"]["llmft_s"] > 0 and results["eval"]["origin_s"] > 0
    assert results["train"]["llmft_tokens_per_s"] > 0 and results["train"]["origin_tokens_per_s"] > 0
    assert 0 < results["memory"]["ratio"] < 2
    assert results["latency"]["warm_ttft_s"] > 0
    assert 0 < results["eval"]["inference_fraction_of_gemm"] < 2
    cls = results["cls"]
    assert cls["llmft_train_tokens_per_s"] > 0 and cls["origin_train_tokens_per_s"] > 0
    assert cls["llmft_eval_s"] > 0 and cls["origin_eval_s"] > 0
    # Both ways classify with the same model, head and adapter: their predictions must agree.
    assert cls["predictions_agree"] == 1 and cls["llmft_f1"] == cls["origin_f1"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["machine"]["cpu_count"] >= 1 and saved["gemm_fp32_gflops"] > 0
