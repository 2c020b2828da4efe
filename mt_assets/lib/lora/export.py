"""A trained adapter as a model to deploy: the base model with the adapter merged in, its tokenizer,
the adapter's lineage and a README, in one folder that `transformers` and vLLM load as they are;
a GGUF file beside them (for llama.cpp and Ollama) when llama.cpp's converter is at hand.

Plain Python: no Dagster here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mt_assets.lib.lora.adapter_folder import LINEAGE_FILE

GGUF_FILE = "model.gguf"
LLAMA_CPP_ENV = "MT_ASSETS_LLAMA_CPP_DIR"
"""A llama.cpp checkout (or install) holding convert_hf_to_gguf.py."""
CONVERTER = "convert_hf_to_gguf.py"
GGUF_HOWTO = (f"set {LLAMA_CPP_ENV} to a llama.cpp checkout (git clone https://github.com/ggml-org/llama.cpp; "
              f"pip install -r llama.cpp/requirements.txt), or put {CONVERTER} on PATH, and export again")


class ExportError(ValueError):
    """An export that cannot be made; the message names the folder or setting and what to do."""


@dataclass(frozen=True)
class Exported:
    """What an export wrote: the folder, and the GGUF file or why there is none."""

    folder: Path
    files: tuple[str, ...]
    gguf: Path | None
    gguf_skipped: str | None


def find_converter(environ: dict[str, str] | None = None) -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py: in $MT_ASSETS_LLAMA_CPP_DIR when set (a folder without it is an
    error), else on PATH; None when there is none."""
    environ = os.environ if environ is None else environ
    folder = environ.get(LLAMA_CPP_ENV)
    if folder:
        script = Path(folder).expanduser() / CONVERTER
        if not script.is_file():
            raise ExportError(f"{LLAMA_CPP_ENV}={folder}: no {CONVERTER} there; point it at a llama.cpp "
                              f"checkout, or unset it to export without GGUF")
        return script
    found = shutil.which(CONVERTER, path=environ.get("PATH"))
    return Path(found) if found else None


def prepare_folder(output: Path) -> None:
    """Create `output`, refusing one that already holds files (an export never overwrites)."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ExportError(f"export folder {output} already exists and is not empty: give a new or empty folder")
    output.mkdir(parents=True, exist_ok=True)


def merge(model, adapter: Path):
    """The base `model` with the adapter folder's LoRA weights added into its own, and its trained
    copies of whole modules (modules_to_save) in place of the originals: PEFT's merge_and_unload."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()


def export_adapter(model, tokenizer, adapter: Path, output: Path, *, name: str, example_prompt: str,
                   converter: Path | None) -> Exported:
    """Merge `adapter` into `model` and save it with `tokenizer`, the adapter's lineage and a README
    into `output`; with llama.cpp's `converter`, also convert the folder to GGUF."""
    output = Path(output)
    prepare_folder(output)
    merged = merge(model, adapter)
    merged.save_pretrained(output)
    tokenizer.save_pretrained(output)
    lineage = Path(adapter) / LINEAGE_FILE
    if lineage.is_file():
        shutil.copyfile(lineage, output / LINEAGE_FILE)
    gguf, skipped = None, f"GGUF skipped: llama.cpp's {CONVERTER} was not found; for llama.cpp and Ollama, {GGUF_HOWTO}"
    if converter is not None:
        gguf, skipped = convert_to_gguf(converter, output), None
    (output / "README.md").write_text(readme(name, example_prompt, lineage.is_file(), gguf is not None),
                                      encoding="utf-8")
    return Exported(output, tuple(sorted(p.name for p in output.iterdir())), gguf, skipped)


def convert_to_gguf(converter: Path, folder: Path) -> Path:
    """Run llama.cpp's converter on the saved folder; its own output names the cause when it fails."""
    target = folder / GGUF_FILE
    done = subprocess.run([sys.executable, str(converter), str(folder), "--outfile", str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0 or not target.is_file():
        raise ExportError(f"{converter} could not convert {folder} to GGUF (exit {done.returncode}):\n"
                          f"{done.stderr[-3000:]}\nThe merged model in {folder} is complete; "
                          f"unset {LLAMA_CPP_ENV} to export without GGUF")
    return target


def readme(name: str, example_prompt: str, has_lineage: bool, has_gguf: bool) -> str:
    """How to load the exported model, and the prompt format it was trained on."""
    lines = [
        f"# {name}, merged into its base model",
        "",
        "The base model with the LoRA adapter's weights merged in (PEFT `merge_and_unload`) and its tokenizer.",
        "No PEFT is needed to use it.",
        "",
        "    from transformers import AutoModelForCausalLM, AutoTokenizer",
        "    model = AutoModelForCausalLM.from_pretrained(\"<this folder>\")",
        "    tokenizer = AutoTokenizer.from_pretrained(\"<this folder>\")",
        "    tokenizer.padding_side = \"left\"  # for batches of prompts to generate from",
        "",
        "vLLM serves it as it is: `vllm serve <this folder>`.",
        "",
        "It was trained to complete prompts of this form (greedy decoding; the translation is the rest of",
        "the last line):",
        "",
        *(f"    {line}" for line in example_prompt.split("\n")),
        "",
    ]
    if has_gguf:
        lines += [f"`{GGUF_FILE}` is the same model for llama.cpp (`llama-cli -m {GGUF_FILE}`) and Ollama",
                  f"(a Modelfile with `FROM ./{GGUF_FILE}`, then `ollama create {name} -f Modelfile`).", ""]
    else:
        lines += [f"No GGUF file: to get one for llama.cpp and Ollama, {GGUF_HOWTO}.", ""]
    if has_lineage:
        lines += [f"`{LINEAGE_FILE}` is the adapter's lineage: its base model, training table and their hashes.", ""]
    return "\n".join(lines)

