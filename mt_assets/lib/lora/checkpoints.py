"""Training checkpoints: which one a run resumes from, and a copy of them on the data lake.

The Trainer writes a checkpoint every `eval_steps` into `<checkpoints>/<run>/checkpoint-N` (`<run>`:
the start of lib.lora.train_loop.run_fingerprint). A run resumes from the last complete one. Where the
adapter trains on a disk that may not outlive the run (a pod's local disk, with the data lake on
object storage), each checkpoint is also copied to a mirror on the lake as soon as it is written
(`MirrorCheckpoints`), and copied back before training starts (`restore_checkpoints`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from upath import UPath

STATE_FILE = "trainer_state.json"
"""Written last into a checkpoint by the Trainer, and copied last to a mirror: its completeness marker."""


def last_checkpoint(folder: Path) -> Path | None:
    """The checkpoint with the highest step that was written completely: the Trainer writes
    trainer_state.json last, so a checkpoint cut off by a crash lacks it, or has it cut off."""
    if not folder.is_dir():
        return None
    complete = [p for p in folder.glob("checkpoint-*") if complete_checkpoint(p)]
    return max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)


def complete_checkpoint(folder: Path) -> bool:
    try:
        step = int(folder.name.split("-")[1])
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError, IndexError):
        return False
    weights = [folder / "adapter_model.safetensors", folder / "adapter_model.bin"]
    return (isinstance(state, dict) and state.get("global_step") == step
            and any(w.is_file() and w.stat().st_size > 0 for w in weights))


def training_ended(checkpoint: Path) -> bool:
    """The checkpoint was written at the last step of its training (a run that ended but whose
    adapter did not reach the data lake)."""
    state = json.loads((checkpoint / STATE_FILE).read_text())
    return state.get("max_steps", 0) > 0 and state["global_step"] >= state["max_steps"]


def load_final_checkpoint(trainer, checkpoint: Path) -> None:
    """Load a checkpoint of the last step into a trainer's PEFT model and state, without training:
    transformers, resuming from it, would train one step past the end."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    set_peft_model_state_dict(trainer.model, load_file(checkpoint / "adapter_model.safetensors"))
    trainer.state = TrainerState.load_from_json(str(checkpoint / STATE_FILE))


def remove_other_runs(checkpoints: Path, progress: Callable[[str], None] | None) -> None:
    """Remove checkpoints of other runs (another table, recipe or base model) beside this run's."""
    for other in checkpoints.parent.glob("*"):
        if other != checkpoints and other.is_dir():
            if progress:
                progress(f"removing checkpoints {other} of another table, recipe or base model: not resumable here")
            shutil.rmtree(other, ignore_errors=True)


def upload_checkpoint(checkpoint: Path, target: UPath) -> None:
    """Copy a local checkpoint folder to `target` (any universal-pathlib location), its
    trainer_state.json last, so a copy cut off part-way is never taken for a complete checkpoint."""
    files = sorted((p for p in checkpoint.rglob("*") if p.is_file()), key=lambda p: p.name == STATE_FILE)
    for path in files:
        remote = target.joinpath(*path.relative_to(checkpoint).parts)
        remote.parent.mkdir(parents=True, exist_ok=True)
        remote.fs.put_file(str(path), remote.path)


def restore_checkpoints(mirror: str | UPath, local: Path, progress: Callable[[str], None] | None = None) -> list[str]:
    """Copy every checkpoint of `mirror` (laid out as `<run>/checkpoint-N`, as `local` is) that is
    complete there and missing or incomplete here. Returns the `<run>/checkpoint-N` names copied."""
    mirror = UPath(mirror)
    if not mirror.is_dir():
        return []
    restored = []
    for remote in sorted(mirror.glob("*/checkpoint-*")):
        target = local / remote.parent.name / remote.name
        if complete_checkpoint(target):
            continue
        partial = local / f".{remote.parent.name}.restoring" / remote.name  # same name: complete_checkpoint reads it
        shutil.rmtree(partial, ignore_errors=True)
        for path in remote.rglob("*"):
            if path.is_file():
                destination = partial.joinpath(*path.relative_to(remote).parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                path.fs.get_file(path.path, str(destination))
        if complete_checkpoint(partial):  # a copy cut off on its way to the mirror is passed over
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial.rename(target)
            restored.append(f"{remote.parent.name}/{remote.name}")
            if progress:
                progress(f"restored checkpoint {remote} to {target}")
        shutil.rmtree(partial.parent, ignore_errors=True)
    return restored


def remove_mirror(mirror: str | UPath) -> None:
    mirror = UPath(mirror)
    if mirror.exists():
        mirror.fs.rm(mirror.path, recursive=True)


def mirror_callback(local_run: Path, mirror: str | UPath):
    """A transformers TrainerCallback that copies each checkpoint of `local_run` (this run's
    `<checkpoints>/<run>` folder) to `mirror/<run>/` when written, and drops from the mirror those
    the Trainer rotated out locally (save_total_limit). Only the main process copies."""
    from transformers import TrainerCallback

    target = UPath(mirror) / local_run.name

    class MirrorCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            upload_checkpoint(local_run / f"checkpoint-{state.global_step}", target / f"checkpoint-{state.global_step}")
            for remote in target.glob("checkpoint-*"):
                if not (local_run / remote.name).exists():
                    remote.fs.rm(remote.path, recursive=True)

    return MirrorCheckpoints()
