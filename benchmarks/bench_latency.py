"""Interactive latency: time to first token and total time of a Compare request through the app's code path.

Run: python benchmarks/bench_latency.py [--size base|tiny] [--tokens 64]

Calls `llmft.ui.compare.compare` (what the Compare button runs) on a ~200-token dialogue; the first request
loads the model (cold), the following ones find it warm, as a user's second click does.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from benchmarks.common import bench_model, describe_model, table, write_result

DIALOGUE = "\n".join(
    [
        "#Person1#: Good morning, I'd like to book a table for Friday evening, please.",
        "#Person2#: Of course. How many people will be joining you, and at what time?",
        "#Person1#: There will be six of us, around seven thirty if that is possible.",
        "#Person2#: Let me check. We have a table by the window at seven thirty, or one in the garden at eight.",
        "#Person1#: The garden sounds lovely, but it might be cold. We'll take the window table at seven thirty.",
        "#Person2#: Very good. Do any of your guests have allergies or dietary requirements we should know about?",
        "#Person1#: One of my friends is vegetarian and another cannot eat nuts.",
        "#Person2#: No problem, our chef can prepare dishes for both. May I have a name and a phone number?",
        "#Person1#: Sure, it's Carla Mendes, and my number is five five five, one two three four.",
        "#Person2#: Thank you, Ms Mendes. Your table for six is booked for Friday at seven thirty. See you then.",
    ]
)


def one_request(ctx, model_path, adapter, tokens):
    from llmft.access import LOCAL_USER
    from llmft.ui.compare import compare

    start, first = time.perf_counter(), None
    for _, _, base_stats, *_ in compare(ctx, LOCAL_USER, "dialogue", model_path, adapter, DIALOGUE, "", tokens):
        # The first update carries the first generated token (its text may be empty for a random model).
        if first is None and base_stats:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start


def main(size: str = "base", tokens: int = 64, repeats: int = 3, model: str | None = None) -> dict:
    from benchmarks.bench_eval import make_adapter
    from llmft.tasks import get_task

    model_path = bench_model(size, model)
    adapter = make_adapter(model_path, tempfile.mkdtemp(prefix="llmft-bench-adapter-"))
    tokenizer_len = len(
        __import__("transformers").AutoTokenizer.from_pretrained(model_path)(
            get_task("dialogue").format_prompt(DIALOGUE)
        )["input_ids"]
    )
    from llmft.context import Context

    ctx = Context.create(tempfile.mkdtemp(prefix="llmft-bench-runs-"))  # a server's state: its model cache
    cold = one_request(ctx, model_path, adapter, tokens)
    warm = [one_request(ctx, model_path, adapter, tokens) for _ in range(repeats)]
    result = {
        "size": size,
        "model": describe_model(model_path),
        "input_tokens": tokenizer_len,
        "max_new_tokens": tokens,
        "cold_ttft_s": round(cold[0], 3),
        "cold_total_s": round(cold[1], 3),
        "warm_ttft_s": round(statistics.median(w[0] for w in warm), 3),
        "warm_total_s": round(statistics.median(w[1] for w in warm), 3),
    }
    print(
        table(
            [
                [
                    f"compare ({tokenizer_len}-token dialogue), {size}",
                    result["cold_ttft_s"],
                    result["warm_ttft_s"],
                    result["warm_total_s"],
                ]
            ],
            ["benchmark", "cold TTFT s", "warm TTFT s", "warm total s (base+tuned)"],
        )
    )
    write_result("latency", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="base", choices=["base", "tiny"])
    parser.add_argument("--model", help="hub id or local folder (default: FLAN-T5-base if available, else random)")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    main(args.size, args.tokens, model=args.model)
