"""Loading causal language models and tokenizers the same way everywhere (base, adapters, teacher)."""

from __future__ import annotations

from pathlib import Path

import torch


class ModelLoadError(OSError):
    """A model that cannot be loaded; the message names the setting and what to do."""


def pick_device(device: str = "auto") -> str:
    """``auto`` means CUDA when available, else CPU; anything else is passed through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(device: str, dtype: str = "auto") -> torch.dtype:
    """bf16 on GPUs that support it, fp16 on older GPUs (T4, V100), fp32 on CPU; or as named."""
    if dtype != "auto":
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r} (setting base_model.dtype): use auto, fp32, bf16 or fp16") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _looks_local(name_or_path: str) -> bool:
    return name_or_path.startswith((".", "/", "~")) or Path(name_or_path).exists()


def load_tokenizer(name_or_path: str, revision: str | None = None):
    """A tokenizer ready for batched generation: left padding, a pad token (EOS if none)."""
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, name_or_path, revision)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, revision: str | None = None, device: str = "auto", dtype: str = "auto",
                   setting: str = "base_model.name_or_path"):
    """A causal LM on `device` in the chosen dtype, in eval mode."""
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    model = _load(AutoModelForCausalLM, name_or_path, revision, setting, dtype=pick_dtype(device, dtype))
    return model.to(device).eval()


def load_skeleton(name_or_path: str, revision: str | None = None, setting: str = "base_model.name_or_path"):
    """The causal LM's modules without its weights (on PyTorch's meta device): enough to check
    settings against the architecture in a moment, before anything loads or trains."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = _load(AutoConfig, name_or_path, revision, setting)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.name_or_path = name_or_path
    return model


def _load(auto_class, name_or_path: str, revision: str | None, setting: str = "base_model.name_or_path", **kwargs):
    if _looks_local(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise ModelLoadError(f"model folder {name_or_path} not found (setting {setting}): build or download it, "
                             "or name a Hugging Face Hub id")
    try:
        return auto_class.from_pretrained(str(Path(name_or_path).expanduser()) if _looks_local(name_or_path)
                                          else name_or_path, revision=revision, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"could not load {name_or_path!r} (setting {setting}): {err}. Check the Hub id or local path; "
            "offline, point the setting at a local folder saved with save_pretrained"
        ) from err
