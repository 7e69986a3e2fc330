"""llmft app (Hugging Face Space entry point). Run: python app.py [--port 7860] [--runs-dir DIR] [--dtype bfloat16]"""

import argparse
import os

from llmft.models import DTYPES
from llmft.ui import build_app, launch

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="llmft Gradio app")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument(
        "--model-dir",
        action="append",
        default=None,
        help="a folder users may load local models from (repeatable; default $LLMFT_MODEL_DIRS)",
    )
    parser.add_argument(
        "--dtype",
        default=os.environ.get("LLMFT_DTYPE", "auto"),
        choices=DTYPES,
        help="weights' dtype: auto (fp32 on CPU, bf16 on a bf16 GPU) or bfloat16, faster on bf16 CPUs "
        "(default $LLMFT_DTYPE or auto)",
    )
    args = parser.parse_args()
    if args.dtype not in DTYPES:  # a default from $LLMFT_DTYPE skips argparse's check
        parser.error(f"LLMFT_DTYPE must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    launch(build_app(args.runs_dir, args.model_dir, args.dtype), server_name=args.host, server_port=args.port)
