"""llmft app (Hugging Face Space entry point).

Run: python app.py [--host 127.0.0.1] [--port 7860] [--auth user:password] [--runs-dir DIR] [--dtype bfloat16]
"""

import argparse
import os
from pathlib import Path

# Before gradio and huggingface_hub are imported: no analytics calls home, and on a Space with persistent
# storage the model cache lives on /data, so models are not downloaded again after every restart.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if Path("/data").is_dir() and os.access("/data", os.W_OK):
    os.environ.setdefault("HF_HOME", "/data/.huggingface")

from llmft.schema import DTYPES  # noqa: E402
from llmft.ui import build_app, launch  # noqa: E402


def default_host() -> str:
    """Loopback on a laptop; every interface on a Space (SPACE_ID set), where the Space's proxy is in front."""
    return os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="llmft Gradio app")
    parser.add_argument(
        "--host",
        default=default_host(),
        help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0 opens the app to your network: "
        "add --auth then)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument(
        "--auth",
        default=os.environ.get("LLMFT_AUTH"),
        help="user:password that the app asks for (Gradio auth; default $LLMFT_AUTH)",
    )
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
    args = parser.parse_args(argv)
    if args.dtype not in DTYPES:  # a default from $LLMFT_DTYPE skips argparse's check
        parser.error(f"LLMFT_DTYPE must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            parser.error("--auth must look like user:password")
        args.auth = (user, password)
    return args


if __name__ == "__main__":
    args = parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.auth and not os.environ.get("SPACE_ID"):
        print(f"warning: the app is open to every machine that can reach {args.host}; add --auth user:password")
    launch(
        build_app(args.runs_dir, args.model_dir, args.dtype),
        server_name=args.host,
        server_port=args.port,
        auth=args.auth,
    )
