"""Side-by-side throughput: the seed's settings against the project's, in one process, on the same data.

For each configuration it measures LoRA training through `lib.lora.train_loop.train_adapter` (tokens per
second over the steps after a warm-up, peak memory) and translation through `lib.translation.translate`
(sentences and new tokens per second, peak memory). Configurations run interleaved, round after
round, and the table shows each one's median. Prompts and targets are real Multi30k de-fr pairs
(train for training, test_2016_flickr for translation), so batches have real sentence lengths.

    python benchmarks/throughput.py --device cpu --threads 1     # tiny GPT-Neo, a few minutes
    python benchmarks/throughput.py --device cuda                # GPT-Neo-1.3B architecture, random weights
    python benchmarks/throughput.py --device cuda --model EleutherAI/gpt-neo-1.3B   # a real model
    python benchmarks/throughput.py --device cpu --arch gemma3-270m   # Gemma 3 270M: fp32 against bf16

`--arch gemma3-270m` builds Gemma 3 270M's architecture (google/gemma-3-270m's config: 18 layers,
hidden 640, a 262,144-token vocabulary whose LM head is most of the model) with random weights; the
4k BPE below emits the first 4,096 ids only, so tokens per pair are this BPE's, not Gemma's. On CPU
its two configurations are `fp32` and `bf16` (bf16 autocast for training, bf16 weights for
translation), side by side; on CUDA the project's settings. `gemma3-tiny` is the same family at
test sizes (for the smoke runs).

Models: on CPU the tiny demo architecture (lib.models.tiny's defaults), on CUDA GPT-Neo-1.3B's,
each built from its config with random weights, with a 4k byte-level BPE tokenizer trained here on
the Multi30k sentences (no Hub needed); `--model` loads a real model and its tokenizer instead.
With random weights a row rarely stops early, so translation runs to `--max-new-tokens`.

Writes benchmarks/results/throughput-<device>-<date>.json (and prints a Markdown table). Data
comes from $MT_ASSETS_SHARED_DATA/multi30k (default ../shared/data beside the project).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime as dt
import gc
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 1024 ** 3
GPT_NEO_1_3B = dict(vocab_size=50257, max_position_embeddings=2048, hidden_size=2048, num_layers=24, num_heads=16,
                    intermediate_size=None, attention_types=[[["global", "local"], 12]], window_size=256,
                    activation_function="gelu_new", embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0,
                    layer_norm_epsilon=1e-5, tie_word_embeddings=True)
"""EleutherAI/gpt-neo-1.3B's config.json, as GPTNeoConfig arguments."""
GEMMA3_270M = dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                   num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                   max_position_embeddings=32768, query_pre_attn_scalar=256, rms_norm_eps=1e-6,
                   hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                   rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                    "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}})
"""google/gemma-3-270m's config.json, as Gemma3TextConfig arguments (every 6th layer global)."""
ARCHS = {"gpt-neo": None, "gemma3-270m": GEMMA3_270M,
         "gemma3-tiny": {**GEMMA3_270M, "vocab_size": 8192, "hidden_size": 64, "intermediate_size": 128,
                         "num_hidden_layers": 2, "head_dim": 16, "query_pre_attn_scalar": 16}}
TOKENIZER_VOCAB = 4096
"""The BPE trained here (the tiny model's): about 60 tokens per training pair, near what GPT-2's
tokenizer gives for these German and French sentences (a 50k BPE trained on the corpus itself
would give fewer). With random weights the 1.3B model's other ids decode to nothing."""


@dataclass(frozen=True)
class Config:
    """One side of the comparison: how the model is held, trained and run."""

    name: str
    dtype: str                      # weights: fp32, bf16, fp16
    mixed_precision: str            # training autocast: no, bf16, fp16
    kernels: str                    # fast (SDPA attention, fused GELU), eager
    batch_size: int = 4             # training pairs per step when token_budget is None
    token_budget: int | None = None  # training: padded tokens per batch
    gradient_checkpointing: bool = False
    loss_impl: str = "auto"         # training loss: fused (TRL's kernel, the seed's), compact, auto
    decoder: str = "fast"           # translation: fast, generate
    translate_batch_size: int = 4
    translate_budget: int | None = None
    translate_dtype: str | None = None  # weights for translation (None: as dtype)
    memory_limit_gib: float | None = None
    head_cast: str = "once"         # compact loss: once (the project's), per-call (before 2026-12-07)
    notes: str = ""


def configs(device: str, bf16: bool, arch: str = "gpt-neo") -> dict[str, Config]:
    """The seed's settings and the project's, for this device (for Gemma on CPU: fp32 against bf16)."""
    if device == "cpu" and arch.startswith("gemma"):
        return {
            "fp32": Config("fp32", "fp32", "no", "fast", token_budget=512, decoder="fast", translate_budget=2048,
                           notes="fp32 weights, 512-token batches, SDPA, compact loss, greedy loop with 2k-token batches"),
            "bf16": Config("bf16", "fp32", "bf16", "fast", token_budget=512, decoder="fast", translate_budget=2048,
                           translate_dtype="bf16",
                           notes="as fp32, training under bf16 autocast, translation with bf16 weights"),
            "bf16-per-call": Config("bf16-per-call", "fp32", "bf16", "fast", token_budget=512, decoder="fast",
                                    translate_budget=2048, translate_dtype="bf16", head_cast="per-call",
                                    notes="as bf16, with the compact loss as it ran before 2026-12-07: hidden states "
                                          "from the model's forward (its LM head on the last position) and the "
                                          "frozen head cast to bf16 at each call"),
        }
    if device == "cpu":
        return {
            "seed": Config("seed", "fp32", "no", "eager", batch_size=4, loss_impl="fused", decoder="generate",
                           translate_batch_size=4,
                           notes="batch 4, eager attention and GELU, TRL's fused loss, generate() in batches of 4"),
            "project": Config("project", "fp32", "no", "fast", token_budget=2048, decoder="fast",
                              translate_budget=8192,
                              notes="2k-token length-bucketed batches, SDPA and fused GELU, compact loss, greedy loop with "
                                    "8k-token batches"),
        }
    half = "bf16" if bf16 else "fp16"
    return {
        "seed": Config("seed", "fp32", "fp16", "eager", batch_size=4, loss_impl="fused", decoder="generate",
                       translate_batch_size=4,
                       notes="fp32 weights, fp16 autocast, batch 4, eager attention and GELU, generate() in batches of 4"),
        "project": Config("project", half, half, "fast", token_budget=8192, decoder="fast", translate_budget=65536,
                          notes=f"{half} weights, 8k-token length-bucketed batches, SDPA and fused GELU, greedy loop with "
                                "64k-token batches"),
        "t4": Config("t4", "fp16", "fp16", "fast", token_budget=4096, gradient_checkpointing=True, decoder="fast",
                     translate_budget=16384, memory_limit_gib=14.0,
                     notes="16 GB GPUs (T4): fp16 weights and autocast, 4k-token batches, gradient checkpointing"),
    }


# ---- data -------------------------------------------------------------------------------------

def shared_data() -> Path:
    configured = os.environ.get("MT_ASSETS_SHARED_DATA")
    return Path(configured) if configured else ROOT.parent / "shared" / "data"


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [" ".join(line.split()) for line in handle]


def multi30k(split: str):
    import pandas as pd

    folder = shared_data() / "multi30k"
    de, fr = read_lines(folder / f"{split}.de.gz"), read_lines(folder / f"{split}.fr.gz")
    return pd.DataFrame({"pair_id": [f"{split}-{i}" for i in range(len(de))], "source": de, "target": fr,
                         "source_lang": "de", "target_lang": "fr"})


# ---- models -----------------------------------------------------------------------------------

def build_tokenizer_folder(folder: Path, vocab_size: int, texts: list[str]) -> Path:
    """A BPE tokenizer trained on the corpus (with the tiny model's recipe), kept between runs."""
    from mt_assets.lib.models.tiny import TinyModelSpec, build_tiny_base_model

    if not (folder / "config.json").is_file():
        build_tiny_base_model(texts, folder, TinyModelSpec(vocab_size=vocab_size, pretrain_steps=0),
                              progress=lambda line: print(f"  {line}", flush=True))
    return folder


class ModelFactory:
    """Fresh models for each measurement: `train_adapter` wraps the model it gets in place."""

    def __init__(self, device: str, model: str | None, work: Path, texts: list[str], arch: str = "gpt-neo"):
        from mt_assets.lib.models.loading import load_tokenizer

        self.device, self.model, self.arch = device, model, arch
        if model:
            self.tokenizer = load_tokenizer(model)
            self.description = model
        else:
            folder = build_tokenizer_folder(work / f"tokenizer-{TOKENIZER_VOCAB}", TOKENIZER_VOCAB, texts)
            self.tokenizer = load_tokenizer(str(folder))
            self.folder = folder
            self.description = ("tiny GPT-Neo (lib.models.tiny defaults), random weights" if device == "cpu"
                                else "GPT-Neo-1.3B architecture, random weights")
            if arch != "gpt-neo":
                self.description = f"{arch} architecture (Gemma 3), random weights"

    def __call__(self, dtype: str):
        import torch

        from mt_assets.lib.models.loading import load_causal_lm, pick_dtype
        from mt_assets.lib.translation.kernels import with_fused_activation

        if self.model:
            return load_causal_lm(self.model, device=self.device, dtype=dtype)
        from transformers import AutoConfig, Gemma3ForCausalLM, Gemma3TextConfig, GPTNeoConfig, GPTNeoForCausalLM

        eos = self.tokenizer.eos_token_id
        ids = dict(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
        if self.arch != "gpt-neo":
            model_class, config = Gemma3ForCausalLM, Gemma3TextConfig(**ARCHS[self.arch], **ids)
        elif self.device == "cpu":
            model_class, config = GPTNeoForCausalLM, AutoConfig.from_pretrained(self.folder)
        else:
            model_class, config = GPTNeoForCausalLM, GPTNeoConfig(**GPT_NEO_1_3B, **ids)
        torch.manual_seed(0)
        with torch.device(self.device):  # the fused GELU, as lib.models.loading loads models
            model = model_class(with_fused_activation(config)).to(pick_dtype(self.device, dtype))
        model.generation_config.pad_token_id = eos
        return model.eval()


# ---- measuring --------------------------------------------------------------------------------

class PeakMemory:
    """Peak memory of a phase: CUDA's allocator peak, or on CPU the process's peak RSS above its
    level at the start, sampled every 5 ms (freed heap is returned to the system first)."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        import torch

        gc.collect()  # the previous phase's trainer and model hold each other in reference cycles
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            _trim_heap()
            process = psutil.Process()
            self.start = process.memory_info().rss
            self.peak = self.start
            self.running = True

            def sample():
                while self.running:
                    self.peak = max(self.peak, process.memory_info().rss)
                    time.sleep(0.005)

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.gib = torch.cuda.max_memory_allocated() / GIB
        else:
            self.running = False
            self.thread.join()
            self.gib = (self.peak - self.start) / GIB
        return False


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput_callback(device: str, warmup_steps: int):
    """A TrainerCallback that times the steps after `warmup_steps` and counts their tokens
    (TRL's `num_tokens`: the non-padding tokens seen, logged every step)."""
    from transformers import TrainerCallback

    class Throughput(TrainerCallback):
        def __init__(self):
            self.marks: dict[int, float] = {}
            self.tokens: dict[int, float] = {}

        def on_step_end(self, args, state, control, **kwargs):
            _sync(device)
            self.marks[state.global_step] = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                self.tokens[state.global_step] = logs["num_tokens"]

        def result(self) -> dict:
            last = max(self.marks)
            first = min(warmup_steps, last - 1)
            seconds = self.marks[last] - self.marks[first]
            tokens = self.tokens[last] - self.tokens[first]
            return {"steps": last - first, "tokens": int(tokens), "seconds": round(seconds, 3),
                    "tokens_per_s": round(tokens / seconds, 1),
                    "tokens_per_step": round(tokens / (last - first), 1)}

    return Throughput()


def profile_callback(step: int, title: str, out: Path):
    """A TrainerCallback that profiles training step `step` (torch.profiler, CPU and CUDA) and appends
    its operators by total time to `out`: where a step's time goes."""
    import torch
    from transformers import TrainerCallback

    class Profile(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step + 1 == step:
                activities = [torch.profiler.ProfilerActivity.CPU]
                if torch.cuda.is_available():
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                self.profiler = torch.profiler.profile(activities=activities)
                self.profiler.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step != step:
                return
            self.profiler.__exit__(None, None, None)
            sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
            try:
                table = self.profiler.key_averages().table(sort_by=sort, row_limit=25)
            except Exception as err:  # a diagnostic only: the measurement goes on, the file says why
                table = f"no table: {type(err).__name__}: {err}"
            with out.open("a") as handle:
                handle.write(f"== {title}: training step {step}, by {sort}\n{table}\n\n")

    return Profile()


def cpu_autocast(recipe, device: str):
    """The recipe to train with and the autocast to train under: where lib.lora.recipe refuses bf16 on
    a CPU, the recipe trains without mixed precision inside torch's CPU bf16 autocast, which is
    what transformers' `bf16=True` runs there."""
    import torch

    from mt_assets.lib.lora.recipe import precision_flags

    if device != "cpu" or recipe.mixed_precision != "bf16":
        return recipe, contextlib.nullcontext()
    try:
        precision_flags(recipe, device)
        return recipe, contextlib.nullcontext()
    except ValueError:
        return dataclasses.replace(recipe, mixed_precision="no"), torch.autocast("cpu", dtype=torch.bfloat16)


@contextlib.contextmanager
def head_cast_per_call(config: Config):
    """For `head_cast="per-call"`: the trainer's compact loss without its decoder shortcut and its
    once-cast frozen head, which is how it ran before (the same loss, more work)."""
    from mt_assets.lib.lora import trainer

    if config.head_cast != "per-call":
        yield
        return
    saved = trainer.decoder_of, trainer.loss_head
    trainer.decoder_of, trainer.loss_head = (lambda model: None), (lambda head, *_: head)
    try:
        yield
    finally:
        trainer.decoder_of, trainer.loss_head = saved


def measure_training(config: Config, factory: ModelFactory, table, args, work: Path) -> dict:
    from mt_assets.lib.lora.recipe import LoraRecipe
    from mt_assets.lib.lora.train_loop import train_adapter

    steps = args.seed_train_steps if config.name == "seed" else args.train_steps
    recipe = LoraRecipe(r=16, alpha=64, dropout=0.1, max_length=256, batch_size=config.batch_size,
                        learning_rate=1e-4, max_steps=args.warmup_steps + steps,
                        mixed_precision=config.mixed_precision, validation_fraction=0.0, eval_steps=10 ** 9,
                        logging_steps=1, gradient_checkpointing=config.gradient_checkpointing,
                        kernels=config.kernels, token_budget=config.token_budget, loss_impl=config.loss_impl)
    recipe, autocast = cpu_autocast(recipe, args.device)
    probe = throughput_callback(args.device, args.warmup_steps)
    callbacks = [probe]
    if args.profile and config.name not in args.profiled:  # its last warm-up step, in the first round
        args.profiled.append(config.name)
        callbacks.insert(0, profile_callback(args.warmup_steps, config.name, args.profile))
    with tempfile.TemporaryDirectory(dir=work) as out, PeakMemory(args.device) as memory, autocast, \
            head_cast_per_call(config):
        model = factory(config.dtype)
        result = train_adapter(model, factory.tokenizer, table, recipe, Path(out), callbacks=callbacks)
        del model
    return {**probe.result(), "peak_memory_gib": round(memory.gib, 3),
            "final_train_loss": result.summary["final_train_loss"]}


def measure_translation(config: Config, factory: ModelFactory, sources: list[str], args) -> dict:
    from mt_assets.lib.translation.translate import translate

    stats: dict = {}
    with PeakMemory(args.device) as memory:
        model = factory(config.translate_dtype or config.dtype)
        _sync(args.device)
        started = time.perf_counter()
        outputs = translate(model, factory.tokenizer, sources, "de", "fr", batch_size=config.translate_batch_size,
                            max_new_tokens=args.max_new_tokens, decoder=config.decoder,
                            token_budget=config.translate_budget, kernels=config.kernels, stats=stats)
        _sync(args.device)
        seconds = time.perf_counter() - started
        del model
    return {"sentences": stats["sentences"], "new_tokens": stats["new_tokens"], "seconds": round(seconds, 3),
            "sentences_per_s": round(stats["sentences"] / seconds, 2),
            "new_tokens_per_s": round(stats["new_tokens"] / seconds, 1), "peak_memory_gib": round(memory.gib, 3),
            "empty_outputs": sum(1 for o in outputs if not o)}


# ---- report -----------------------------------------------------------------------------------

def median_of(rounds: list[dict], key: str):
    return statistics.median(r[key] for r in rounds)


def summarize(results: dict) -> dict:
    table = {}
    for name, phases in results.items():
        train, tr = phases["training"], phases["translation"]
        table[name] = {
            "train_tokens_per_s": median_of(train, "tokens_per_s"),
            "train_peak_gib": max(r["peak_memory_gib"] for r in train),
            "translate_sentences_per_s": median_of(tr, "sentences_per_s") if tr else None,
            "translate_new_tokens_per_s": median_of(tr, "new_tokens_per_s") if tr else None,
            "translate_peak_gib": max(r["peak_memory_gib"] for r in tr) if tr else None,
        }
    if table:  # ratios against the seed's settings (Gemma on CPU: against fp32)
        base = table["seed" if "seed" in table else next(iter(table))]
        for row in table.values():
            row["train_speedup"] = round(row["train_tokens_per_s"] / base["train_tokens_per_s"], 2)
            if row["translate_new_tokens_per_s"] and base["translate_new_tokens_per_s"]:
                row["translate_speedup"] = round(row["translate_new_tokens_per_s"] / base["translate_new_tokens_per_s"], 2)
    return table


def markdown(table: dict) -> str:
    base = "seed" if "seed" in table else next(iter(table), "seed")
    lines = ["| configuration | train tokens/s | train peak GiB | translate sentences/s | translate new tokens/s "
             f"| translate peak GiB | train × {base} | translate × {base} |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def show(value, digits=1):
        return "–" if value is None else f"{value:,.{digits}f}"

    for name, row in table.items():
        lines.append(f"| {name} | {show(row['train_tokens_per_s'], 0)} | {show(row['train_peak_gib'], 2)} "
                     f"| {show(row['translate_sentences_per_s'])} | {show(row['translate_new_tokens_per_s'], 0)} "
                     f"| {show(row['translate_peak_gib'], 2)} | {show(row.get('train_speedup'), 2)} "
                     f"| {show(row.get('translate_speedup'), 2)} |")
    return "\n".join(lines)


def mean_tokens(tokenizer, table) -> float:
    """Mean tokens of a training example (prompt, completion and EOS) over the first 1,000 pairs."""
    from mt_assets.lib.lora.train_loop import to_prompt_completion

    examples = to_prompt_completion(table.head(1000))
    ids = tokenizer([e["prompt"] + e["completion"] for e in examples])["input_ids"]
    return round(sum(len(i) + 1 for i in ids) / len(ids), 1)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s)"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--model", default=None, help="a real model (Hub id or folder) instead of random weights")
    parser.add_argument("--arch", default="gpt-neo", choices=sorted(ARCHS),
                        help="the architecture built with random weights (default gpt-neo: tiny on CPU, 1.3B on CUDA)")
    parser.add_argument("--configs", default=None, help="comma-separated subset of: seed, project, t4 (GPU)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: 3 CPU, 1 GPU)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="training steps not timed (default 2 CPU, 5 GPU)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed training steps of the project's "
                        "settings (default 12 CPU, 30 GPU)")
    parser.add_argument("--seed-train-steps", type=int, default=None, help="timed training steps of the seed's "
                        "settings, whose steps are smaller (default 60 CPU, 30 GPU)")
    parser.add_argument("--train-pairs", type=int, default=None, help="pairs of multi30k train (default 4000 CPU, "
                        "8000 GPU)")
    parser.add_argument("--sentences", type=int, default=None, help="test sentences for the project (default 96 CPU, 1000 GPU)")
    parser.add_argument("--seed-sentences", type=int, default=None, help="test sentences for the seed settings, "
                        "whose speed does not depend on it (default: as --sentences on CPU, 64 on GPU)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 48 CPU, 128 GPU (evaluation's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--skip-translation", action="store_true")
    parser.add_argument("--profile", type=Path, default=None, help="profile each configuration's last warm-up "
                        "training step (torch.profiler) into this text file")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "results" / "work")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    args.profiled = []

    import torch

    from mt_assets.lib.models.loading import pick_device

    args.device = pick_device(args.device)
    load_at_start = os.getloadavg()
    cpu = args.device == "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    defaults = dict(rounds=(3, 1), warmup_steps=(2, 5), train_steps=(12, 30), seed_train_steps=(60, 30),
                    train_pairs=(4000, 8000),
                    sentences=(96, 1000), max_new_tokens=(48, 128))
    for key, (on_cpu, on_gpu) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, on_cpu if cpu else on_gpu)
    if args.seed_sentences is None:
        args.seed_sentences = args.sentences if cpu else 64
    bf16 = not cpu and torch.cuda.is_bf16_supported()
    available = configs(args.device, bf16, args.arch)
    chosen = [available[n] for n in (args.configs.split(",") if args.configs else available)]
    args.work_dir.mkdir(parents=True, exist_ok=True)

    train = multi30k("train")
    test = multi30k("test_2016_flickr")
    if args.train_pairs:
        train = train.sample(n=min(args.train_pairs, len(train)), random_state=0).reset_index(drop=True)
    factory = ModelFactory(args.device, args.model, args.work_dir, list(train["source"]) + list(train["target"]),
                           args.arch)
    print(f"device: {device_name(args.device)}; model: {factory.description}; {len(train)} training pairs", flush=True)

    results = {c.name: {"training": [], "translation": []} for c in chosen}
    for round_ in range(args.rounds):
        for config in chosen:
            outcome = measure_training(config, factory, train, args, args.work_dir)
            results[config.name]["training"].append(outcome)
            print(f"round {round_ + 1} {config.name} training: {outcome}", flush=True)
        if args.skip_translation:
            continue
        for config in chosen:
            count = args.seed_sentences if config.name == "seed" else args.sentences
            outcome = measure_translation(config, factory, list(test["source"][:count]), args)
            results[config.name]["translation"].append(outcome)
            print(f"round {round_ + 1} {config.name} translation: {outcome}", flush=True)

    table = summarize(results)
    for config in chosen:
        if config.memory_limit_gib is not None:
            row = table[config.name]
            row["fits_memory_limit"] = max(row["train_peak_gib"], row["translate_peak_gib"] or 0) <= config.memory_limit_gib
    report = {
        "date": dt.date.today().isoformat(),
        "device": device_name(args.device),
        "model": factory.description,
        "torch": torch.__version__,
        "load_average_1_5_15_min": {"start": [round(x, 2) for x in load_at_start],
                                    "end": [round(x, 2) for x in os.getloadavg()]},
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "configurations": {c.name: c.__dict__ for c in chosen},
        "tokens_per_training_pair": mean_tokens(factory.tokenizer, train),
        "summary": table,
        "rounds": results,
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"throughput-{args.device.split(':')[0]}-{report['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\n{report['device']}, {report['date']}, {report['model']}\n")
    print(markdown(table))
    print(f"\nwritten to {out}")
    return report


if __name__ == "__main__":
    main()
