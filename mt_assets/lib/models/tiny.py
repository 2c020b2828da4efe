"""A tiny GPT-Neo base model built locally, so tests and the offline demo need no hub download.

`build_tiny_base_model` trains a byte-level BPE tokenizer on monolingual text, pretrains a small
`GPTNeoForCausalLM` (global/local attention like EleutherAI/gpt-neo-*) on the same text for a
fixed number of optimiser steps, and saves both with `save_pretrained`, so
`AutoModelForCausalLM.from_pretrained(out_dir)` and `AutoTokenizer.from_pretrained(out_dir)` load
it like a hub model. The build is deterministic for a given spec, texts and torch thread count.

Plain Python: no Dagster here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Sequence

EOS_TOKEN = "<|endoftext|>"
"""The single special token, used as bos, eos, unk and pad, as in GPT-2 / GPT-Neo."""

SPEC_FILE = "tiny_model_spec.json"
"""Written into the model folder beside the weights: the spec and the build's statistics."""


@dataclass(frozen=True)
class TinyModelSpec:
    """Size and pretraining budget of the tiny base model.

    The defaults (1.35M parameters, 300 steps of 16 x 128 tokens) pretrain in about 65 s on 2 idle
    CPU cores; on a shared machine prefer torch.set_num_threads(1).
    """

    vocab_size: int = 4096
    """BPE vocabulary size, including the 256 byte symbols and the special token."""
    hidden_size: int = 128
    num_layers: int = 4
    """Layers alternate global and local attention, so keep it even."""
    num_heads: int = 4
    intermediate_size: int | None = None
    """MLP width; None means 4 * hidden_size."""
    max_position_embeddings: int = 256
    """Longest sequence the model can take (learned absolute positions)."""
    window_size: int = 128
    """Span of the local-attention layers."""
    block_size: int = 128
    """Length of the packed token blocks used for pretraining; positions beyond it stay untrained."""
    batch_size: int = 16
    """Blocks per pretraining step."""
    pretrain_steps: int = 300
    """Optimiser steps of pretraining: the budget, independent of wall-clock speed."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up, then cosine decay to a tenth of it)."""
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    min_frequency: int = 2
    """Minimum pair frequency for a BPE merge."""
    seed: int = 0
    max_texts: int | None = None
    """Use at most this many texts (the first ones) for tokenizer and pretraining; None uses all."""

    def __post_init__(self) -> None:
        if self.num_layers < 1 or self.num_layers % 2:
            raise ValueError(f"num_layers must be a positive even number, got {self.num_layers}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.block_size > self.max_position_embeddings:
            raise ValueError("block_size must not exceed max_position_embeddings")
        if self.vocab_size < 300:
            raise ValueError("vocab_size must leave room for the 256 byte symbols and some merges")
        if self.pretrain_steps < 0:
            raise ValueError("pretrain_steps must be >= 0")


def _train_tokenizer(texts: Sequence[str], spec: TinyModelSpec, max_length: int):
    """Byte-level BPE like GPT-2: every byte is in the alphabet, so "\\n" is always one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )


def _token_blocks(tokenizer, texts: Sequence[str], block_size: int):
    """Each text as one line ("text\\n" then EOS), concatenated and cut into full blocks."""
    import torch

    eos_id = tokenizer.eos_token_id
    encoded = tokenizer([f"{text}\n" for text in texts], add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    for ids in encoded:
        stream.extend(ids)
        stream.append(eos_id)
    usable = (len(stream) // block_size) * block_size
    if usable == 0:
        raise ValueError(f"the texts give {len(stream)} tokens, fewer than one block of {block_size}")
    return torch.tensor(stream[:usable], dtype=torch.long).view(-1, block_size), len(stream)


def _pretrain(model, blocks, spec: TinyModelSpec, progress: Callable[[str], None]) -> dict:
    import torch

    generator = torch.Generator().manual_seed(spec.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.98),
    )

    def lr_factor(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        done = (step - spec.warmup_steps) / max(1, spec.pretrain_steps - spec.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    order = torch.randperm(len(blocks), generator=generator)
    cursor = 0
    recent: list[float] = []
    first_loss = None
    report_every = max(1, spec.pretrain_steps // 10)
    for step in range(spec.pretrain_steps):
        if cursor + spec.batch_size > len(order):
            order = torch.randperm(len(blocks), generator=generator)
            cursor = 0
        batch = blocks[order[cursor : cursor + spec.batch_size]]
        cursor += spec.batch_size
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        first_loss = value if first_loss is None else first_loss
        recent = (recent + [value])[-report_every:]
        if (step + 1) % report_every == 0 or step + 1 == spec.pretrain_steps:
            progress(f"pretrain step {step + 1}/{spec.pretrain_steps}: loss {sum(recent) / len(recent):.3f}")
    model.eval()
    return {
        "first_loss": first_loss,
        "final_loss": sum(recent) / len(recent) if recent else None,
        "epochs": spec.pretrain_steps * spec.batch_size / len(blocks),
    }


def _replace_dir(staged: pathlib.Path, out_dir: pathlib.Path) -> None:
    """Move a finished folder into place; an existing out_dir is swapped out, then removed."""
    if not out_dir.exists():
        os.replace(staged, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.replace(out_dir, old)
    try:
        os.replace(staged, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_tiny_base_model(
    texts: Sequence[str],
    out_dir: pathlib.Path,
    spec: TinyModelSpec = TinyModelSpec(),
    progress: Callable[[str], None] | None = None,
) -> pathlib.Path:
    """Train a tokenizer and pretrain a tiny GPT-Neo on `texts`; save both into `out_dir`.

    Each text is one monolingual sentence; it is trained on as ``text + "\\n"`` followed by the EOS
    token, packed into blocks of `spec.block_size` tokens. Everything is written to a temporary
    folder beside `out_dir` and renamed into place at the end, so `out_dir` never holds a partial
    model; an existing `out_dir` is replaced. Returns `out_dir`.

    Uses torch's current thread count; results are bit-identical for the same spec, texts and
    thread count. The spec and build statistics are written to `out_dir / SPEC_FILE`.
    """
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    say = progress or (lambda message: None)
    out_dir = pathlib.Path(out_dir)
    clean = [" ".join(str(text).split()) for text in texts]
    clean = [text for text in clean if text]
    if spec.max_texts is not None:
        clean = clean[: spec.max_texts]
    if not clean:
        raise ValueError("build_tiny_base_model needs at least one non-blank text")

    started, cpu_started = time.perf_counter(), time.process_time()
    tokenizer = _train_tokenizer(clean, spec, spec.max_position_embeddings)
    say(f"tokenizer: {len(tokenizer)} tokens from {len(clean)} texts")
    blocks, n_tokens = _token_blocks(tokenizer, clean, spec.block_size)
    say(f"pretraining data: {n_tokens} tokens, {len(blocks)} blocks of {spec.block_size}")

    eos_id = tokenizer.eos_token_id
    config = GPTNeoConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=spec.max_position_embeddings,
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size or 4 * spec.hidden_size,
        attention_types=[[["global", "local"], spec.num_layers // 2]],
        window_size=spec.window_size,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = GPTNeoForCausalLM(config)
    say(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    stats = _pretrain(model, blocks, spec, say)
    model.generation_config.bos_token_id = eos_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        staged.chmod(0o755)  # mkdtemp makes it private; the final folder should read like any other
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        record = {
            "spec": dataclasses.asdict(spec),
            "texts": len(clean),
            "tokens": n_tokens,
            "parameters": sum(p.numel() for p in model.parameters()),
            "build_seconds": round(time.perf_counter() - started, 1),
            "build_cpu_seconds": round(time.process_time() - cpu_started, 1),
            "torch_threads": torch.get_num_threads(),
            **stats,
        }
        (staged / SPEC_FILE).write_text(json.dumps(record, indent=2) + "\n")
        _replace_dir(staged, out_dir)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    say(f"saved tiny base model to {out_dir} in {record['build_seconds']} s")
    return out_dir
