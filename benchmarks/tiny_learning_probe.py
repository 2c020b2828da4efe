"""Probe: does LoRA fine-tuning of the tiny GPT-Neo visibly learn German->French on CPU?

Builds (or reuses) a tiny base model with mt_assets.lib.models.tiny on Multi30k monolingual
de+fr train lines, then LoRA-fine-tunes it with TRL SFTTrainer on a prompt/completion dataset in
the product's exact format, and reports sacrebleu BLEU/chrF (greedy decoding) before and after,
on the fine-tuning pairs themselves and on held-out pairs from test_2016_flickr.

    python benchmarks/tiny_learning_probe.py --base /tmp/tiny_base --pairs 32
    python benchmarks/tiny_learning_probe.py --base /tmp/tiny_base --pairs 400 --heldout 30

Data is read from $MT_ASSETS_SHARED_DATA/multi30k (default /work/shared/data/multi30k).
Pretraining excludes the first --reserve (400) pairs of the seeded permutation that the
fine-tuning pairs are drawn from, so one base model serves every --pairs value.
Prints one JSON line with all numbers at the end.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import random
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "Translate German to French.\nGerman: {source}\nFrench:"


def read_lines(path: pathlib.Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def load_multi30k(split: str) -> list[tuple[str, str]]:
    root = pathlib.Path(os.environ.get("MT_ASSETS_SHARED_DATA", "/work/shared/data")) / "multi30k"
    de = read_lines(root / f"{split}.de.gz")
    fr = read_lines(root / f"{split}.fr.gz")
    assert len(de) == len(fr), (split, len(de), len(fr))
    return [(" ".join(s.split()), " ".join(t.split())) for s, t in zip(de, fr)]


def translate(model, tokenizer, sources: list[str], max_new_tokens: int = 96) -> list[str]:
    """Greedy, one sentence at a time (no padding effects), stop at newline or EOS."""
    import torch

    newline_id = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("\n"))[0]
    stops = [tokenizer.eos_token_id, newline_id]
    model.eval()
    outputs = []
    with torch.no_grad():
        for source in sources:
            enc = tokenizer(PROMPT.format(source=source), return_tensors="pt", add_special_tokens=False)
            room = model.config.max_position_embeddings - enc["input_ids"].shape[1]
            generated = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max(1, min(max_new_tokens, room)),
                eos_token_id=stops,
                pad_token_id=tokenizer.eos_token_id,
            )
            text = tokenizer.decode(generated[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            outputs.append(text.split("\n")[0].strip())
    return outputs


def score(hyps: list[str], refs: list[str]) -> dict:
    import sacrebleu

    return {
        "bleu": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2),
    }


def evaluate(model, tokenizer, pairs: list[tuple[str, str]]) -> tuple[dict, list[str], float]:
    started = time.perf_counter()
    hyps = translate(model, tokenizer, [s for s, _ in pairs])
    return score(hyps, [t for _, t in pairs]), hyps, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=pathlib.Path, required=True, help="tiny base model folder (built if missing)")
    parser.add_argument("--spec", default="{}", help="JSON overrides of TinyModelSpec for building the base")
    parser.add_argument("--pairs", type=int, default=32, help="fine-tuning pairs from multi30k train")
    parser.add_argument("--reserve", type=int, default=400, help="leading permutation pairs kept out of pretraining")
    parser.add_argument("--heldout", type=int, default=30, help="held-out pairs from test_2016_flickr (0 = none)")
    parser.add_argument("--eval-train", type=int, default=32, help="evaluate on at most this many fine-tuning pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--r", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=128)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--targets", default="all-linear", help="'all-linear' or comma-separated module names")
    parser.add_argument("--modules-to-save", default="", help="comma-separated, e.g. 'wte'")
    parser.add_argument("--tie", action="store_true", help="LoraConfig(ensure_weight_tying=True)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--epochs", type=float, default=80)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--scheduler", default="linear")
    parser.add_argument("--warmup", type=float, default=0.05, help="warm-up as a fraction of steps")
    parser.add_argument("--threads", type=int, default=2, help="use 1 when other jobs share the cores")
    parser.add_argument("--show", type=int, default=3, help="print this many example translations")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    train = load_multi30k("train")
    order = list(range(len(train)))
    random.Random(args.seed).shuffle(order)
    ft_pairs = [train[i] for i in order[: args.pairs]]
    heldout = load_multi30k("test_2016_flickr")[: args.heldout]

    from mt_assets.lib.models.tiny import TinyModelSpec, build_tiny_base_model

    result: dict = {"args": vars(args) | {"base": str(args.base)}}
    if not (args.base / "config.json").exists():
        reserved = set(order[: max(args.reserve, args.pairs)])
        texts = [t for i, pair in enumerate(train) if i not in reserved for t in pair]
        started = time.perf_counter()
        build_tiny_base_model(texts, args.base, TinyModelSpec(**json.loads(args.spec)), progress=print)
        result["build_seconds"] = round(time.perf_counter() - started, 1)
    result["base_record"] = json.loads((args.base / "tiny_model_spec.json").read_text())

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(args.base)
    eval_train = ft_pairs[: args.eval_train]

    base_train, _, t = evaluate(model, tokenizer, eval_train)
    result["base_train"] = base_train | {"seconds": round(t, 1)}
    if heldout:
        base_held, base_hyps, t = evaluate(model, tokenizer, heldout)
        result["base_heldout"] = base_held | {"seconds": round(t, 1)}
    print("base", result["base_train"], result.get("base_heldout"), flush=True)

    dataset = Dataset.from_dict(
        {
            "prompt": [PROMPT.format(source=s) for s, _ in ft_pairs],
            "completion": [f" {t}\n{tokenizer.eos_token}" for _, t in ft_pairs],
        }
    )
    targets = "all-linear" if args.targets == "all-linear" else [m for m in args.targets.split(",") if m]
    lora = LoraConfig(
        r=args.r,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules=targets,
        modules_to_save=[m for m in args.modules_to_save.split(",") if m] or None,
        ensure_weight_tying=args.tie,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with tempfile.TemporaryDirectory() as scratch:
        config = SFTConfig(
            output_dir=scratch,
            num_train_epochs=args.epochs,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch,
            learning_rate=args.lr,
            lr_scheduler_type=args.scheduler,
            warmup_steps=args.warmup,
            weight_decay=0.0,
            max_length=256,
            packing=False,
            completion_only_loss=True,
            bf16=False,  # SFTConfig defaults bf16=True (BaseConfig.__post_init__); CPU wants fp32
            fp16=False,
            gradient_checkpointing=False,  # SFTConfig defaults to True; pointless and slow here
            use_cpu=True,
            logging_steps=10,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=args.seed,
            data_seed=args.seed,
            dataloader_num_workers=0,
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trainer.model.parameters())
        sample = trainer.train_dataset[0]
        labels = [i for i in sample["labels"] if i != -100]
        print("completion tokens trained on:", repr(tokenizer.decode(labels)), flush=True)
        started, cpu_started = time.perf_counter(), time.process_time()
        output = trainer.train()
        result["train_seconds"] = round(time.perf_counter() - started, 1)
        result["train_cpu_seconds"] = round(time.process_time() - cpu_started, 1)
        result["train_steps"] = output.global_step
        result["train_loss"] = round(output.training_loss, 4)
        result["final_logged_loss"] = next(
            (round(h["loss"], 4) for h in reversed(trainer.state.log_history) if "loss" in h), None
        )
        result["trainable_params"] = trainable
        result["total_params"] = total
    tuned = trainer.model
    ft_train, hyps, t = evaluate(tuned, tokenizer, eval_train)
    result["tuned_train"] = ft_train | {"seconds": round(t, 1)}
    for (s, r), h in list(zip(eval_train, hyps))[: args.show]:
        print(f"  train  SRC {s}\n         REF {r}\n         HYP {h}")
    if heldout:
        ft_held, hyps, t = evaluate(tuned, tokenizer, heldout)
        result["tuned_heldout"] = ft_held | {"seconds": round(t, 1)}
        for (s, r), h, b in list(zip(heldout, hyps, base_hyps))[: args.show]:
            print(f"  heldout SRC {s}\n          REF {r}\n          BASE {b}\n          HYP {h}")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
