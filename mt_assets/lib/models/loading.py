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


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of CPUs with bf16 matrix instructions (Intel AMX, AVX512-BF16)."""


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX or AVX512-BF16), from the flags
    of /proc/cpuinfo (or of `cpuinfo`, its text). Elsewhere bf16 is emulated and slower than fp32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no flags to read, so no claim
            return False
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[-1].split()}
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def pick_dtype(device: str, dtype: str = "auto", for_training: bool = False) -> torch.dtype:
    """bf16 on GPUs that support it, fp16 on older GPUs (T4, V100); on CPU bf16 where the CPU
    has AMX or AVX512-BF16, else fp32; or as named.

    On CPU, `for_training` keeps fp32 weights under `auto`: training gets its bf16 from autocast
    (`mixed_precision`). Measured on Gemma 3 270M (one thread, AMX): greedy decoding with bf16
    weights takes 0.4x the CPU time of fp32; a LoRA step with fp32 weights under bf16 autocast
    0.45x, but with bf16 weights 2.5x (its forward is slow in bf16 with autograd on).
    """
    if dtype != "auto":
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r} (setting base_model.dtype): use auto, fp32, bf16 or fp16") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device == "cpu" and cpu_has_bf16() and not for_training else torch.float32


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
                   setting: str = "base_model.name_or_path", for_training: bool = False):
    """A causal LM on `device` in the chosen dtype (see pick_dtype), in eval mode, with its GELU as
    one fused kernel where the config names the unfused one (lib.translation.kernels.with_fused_activation)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mt_assets.lib.translation.kernels import with_fused_activation

    device = pick_device(device)
    config = with_fused_activation(_load(AutoConfig, name_or_path, revision, setting))
    model = _load(AutoModelForCausalLM, name_or_path, revision, setting, config=config,
                  dtype=pick_dtype(device, dtype, for_training))
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
