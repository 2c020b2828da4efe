"""Adapter fusion (system E): two trained LoRA adapters merged into one with PEFT's
`add_weighted_adapter`, written as an adapter folder that loads like a trained one, with the
lineage of both parents (their folders' and training tables' hashes) and a fusion summary.

What PEFT computes per target module, with s_i = lora_alpha_i / r_i of parent i and w_i its weight
(the merged adapter has lora_alpha = r, so its own scaling is 1):
- linear: A = sum_i sign(w_i) sqrt(|w_i| s_i) A_i, B = sum_i sqrt(|w_i| s_i) B_i (equal r needed);
  the merged delta B @ A is not sum_i w_i s_i B_i A_i: cross terms remain (PEFT calls it rough);
- cat: A_i and B_i stacked (rank r_1 + r_2): the delta is exactly sum_i w_i s_i B_i A_i;
- ties, dare_ties: A and B each merged as TIES / DARE-TIES task vectors with those scaled weights,
  keeping a `density` share of each parent's entries (DARE draws its mask from `seed`).
Modules trained whole (training.modules_to_save), which PEFT cannot merge, are merged here as task
vectors: base + sum_i w_i (M_i - base).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Annotated, Literal, get_type_hints

from annotated_types import Ge, Gt, Le, Len

from mt_assets.lib.hashing import folder_hash
from mt_assets.lib.lora.adapter_folder import read_lineage, write_lineage

METHODS = ("linear", "ties", "dare_ties", "cat")
EQUAL_RANK = ("linear", "ties", "dare_ties")
"""Methods PEFT runs only on parents of one rank."""
DENSITY_METHODS = ("ties", "dare_ties")
FUSION_FILE = "fusion_summary.json"
"""Written into the fused adapter's folder: the method, weights, density, rank and both parents."""
ADAPTER_CONFIG = "adapter_config.json"
SAVED_PREFIX = "base_model.model."
"""How PEFT names a module trained whole in an adapter's weights file: this, then the module's own key."""
MERGED = "default"
"""The merged adapter's name on the model: PEFT saves the adapter of this name at the folder's root."""


@dataclass(frozen=True)
class FusionRecipe:
    """How adapter_E merges adapter_B and adapter_C: defaults are an even linear merge."""

    method: Literal[METHODS] = "linear"
    """linear, ties, dare_ties (equal r) or cat (ranks add up; the exact weighted sum of the deltas)."""
    weights: Annotated[list[float], Len(2, 2)] = field(default_factory=lambda: [0.5, 0.5])
    """[w_B, w_C]: each parent's weight in the merge."""
    density: Annotated[float, Gt(0), Le(1)] = 0.5
    """ties and dare_ties: the share of each parent's entries kept (unused by linear and cat)."""
    seed: Annotated[int, Ge(0)] = 0
    """dare_ties: the seed of its random pruning mask."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown fusion method {self.method!r} (setting fusion.method): use one of {list(METHODS)}")
        if len(self.weights) != 2:
            raise ValueError(f"setting fusion.weights is {list(self.weights)}: give two weights, [w_B, w_C]")
        if not 0 < self.density <= 1:
            raise ValueError(f"setting fusion.density is {self.density}: it must be more than 0 and at most 1")
        if self.seed < 0:
            raise ValueError(f"setting fusion.seed is {self.seed}: it must be at least 0")


@cache
def field_types() -> dict[str, object]:
    """Each recipe field's annotation (`Annotated` bounds kept), for the Dagster resource's fields."""
    return get_type_hints(FusionRecipe, include_extras=True)


def field_defaults() -> dict[str, object]:
    defaults = FusionRecipe()
    return {f.name: getattr(defaults, f.name) for f in fields(FusionRecipe)}


def _config(folder: Path) -> dict:
    return json.loads((Path(folder) / ADAPTER_CONFIG).read_text(encoding="utf-8"))


def _modules(config: dict) -> object:
    modules = config.get("target_modules")
    return sorted(modules) if isinstance(modules, list) else modules


def check_parents(parents: dict[str, Path], recipe: FusionRecipe, base_model: dict | None = None) -> None:
    """Refuse parents PEFT cannot merge, or should not: another base model than each other's or
    `base_model` (the profile's reference), other target modules, another r for an equal-rank
    method, or modules trained whole (modules_to_save). Errors name the setting at fault."""
    (first, first_folder), (second, second_folder) = parents.items()
    configs = {name: _config(folder) for name, folder in parents.items()}
    lineages = {name: read_lineage(folder) for name, folder in parents.items()}
    bases = {name: (lineage.get("base_model"), lineage.get("revision")) for name, lineage in lineages.items()}
    if bases[first] != bases[second]:
        raise ValueError(f"{first} was trained on base model {bases[first]}, {second} on {bases[second]}: "
                         "adapters of different base models cannot be merged. Materialize both with the "
                         "same base_model setting")
    if base_model is not None and bases[first][0] is not None and bases[first] != (
            base_model["base_model"], base_model["revision"]):
        raise ValueError(f"{first} and {second} were trained on base model {bases[first]}, the profile's "
                         f"base_model is {(base_model['base_model'], base_model['revision'])}: materialize "
                         f"{first} and {second} again with this profile")
    if _modules(configs[first]) != _modules(configs[second]):
        raise ValueError(f"{first} targets modules {_modules(configs[first])}, {second} "
                         f"{_modules(configs[second])} (setting training.target_modules): merge adapters "
                         "trained with the same target modules")
    if recipe.method in EQUAL_RANK and configs[first]["r"] != configs[second]["r"]:
        raise ValueError(f"fusion.method {recipe.method} needs parents of one rank; {first} has r "
                         f"{configs[first]['r']}, {second} r {configs[second]['r']} (setting training.r): "
                         "use fusion.method cat, or train both with the same r")
    saved = {name: sorted(config.get("modules_to_save") or []) for name, config in configs.items()}
    if saved[first] != saved[second]:
        raise ValueError(f"{first} trains modules {saved[first]} whole, {second} {saved[second]} (setting "
                         "training.modules_to_save): merge adapters trained with the same modules_to_save")


def merge_adapters(model, parents: dict[str, Path], recipe: FusionRecipe):
    """`model` (the base model) with both parents' LoRA weights loaded under their names and merged
    into the adapter MERGED (active). `parents` maps each parent's name to its folder, [B, C] in
    order. Modules trained whole (modules_to_save) are left out here: PEFT cannot merge them
    (`merge_saved_modules` does)."""
    import torch
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    for name, folder in parents.items():
        config = PeftConfig.from_pretrained(str(folder))
        config.modules_to_save = None
        if name == next(iter(parents)):
            model = get_peft_model(model, config, adapter_name=name)
        else:
            model.add_adapter(name, config)
        lora = {key: value for key, value in load_peft_weights(str(folder)).items() if "lora_" in key}
        set_peft_model_state_dict(model, lora, adapter_name=name)
    density = recipe.density if recipe.method in DENSITY_METHODS else None
    with torch.random.fork_rng(devices=[]):  # dare_ties' mask, without touching the caller's generator
        torch.manual_seed(recipe.seed)
        model.add_weighted_adapter(list(parents), list(map(float, recipe.weights)), MERGED,
                                   combination_type=recipe.method, density=density)
    model.set_adapter(MERGED)
    return model.eval()


def merge_saved_modules(model, parents: dict[str, Path], recipe: FusionRecipe, output: Path) -> list[str]:
    """The parents' modules trained whole (modules_to_save) merged as task vectors, into the
    adapter saved at `output`: base + w_B (M_B - base) + w_C (M_C - base), whatever the method
    (an even [0.5, 0.5] gives their mean). Returns the modules (none: nothing to do)."""
    import torch
    from peft.utils import load_peft_weights
    from safetensors.torch import save_file

    modules = _config(next(iter(parents.values()))).get("modules_to_save") or []
    if not modules:
        return []
    saved = [{k: v for k, v in load_peft_weights(str(folder)).items() if "lora_" not in k} for folder in parents.values()]
    base = model.get_base_model().state_dict()
    weights = load_peft_weights(str(output))
    for key, first in saved[0].items():
        original = base[key.removeprefix(SAVED_PREFIX)].detach().to("cpu", torch.float32)
        merged = original + sum(w * (parent[key].to(torch.float32) - original)
                                for w, parent in zip(map(float, recipe.weights), saved))
        weights[key] = merged.to(first.dtype).contiguous()
    save_file(weights, str(output / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = _config(output)
    (output / ADAPTER_CONFIG).write_text(json.dumps({**config, "modules_to_save": modules}, indent=2))
    return modules


def fuse_adapters(model, parents: dict[str, Path], recipe: FusionRecipe, output: Path,
                  base_model: dict | None = None) -> dict:
    """Merge the parents onto `model` (the base model, loaded) and write only the merged adapter
    to `output`, with LINEAGE_FILE (each parent, its folder hash, its training table and that
    table's hash; the base model) and FUSION_FILE. Returns the fusion summary."""
    check_parents(parents, recipe, base_model)
    merged = merge_adapters(model, parents, recipe)
    output = Path(output)
    merged.save_pretrained(str(output), selected_adapters=[MERGED], safe_serialization=True)
    saved_modules = merge_saved_modules(merged, parents, recipe, output)
    parent_rows = [{"adapter": name, "adapter_hash": folder_hash(Path(folder)),
                    "training_table": read_lineage(folder).get("training_table", ""),
                    "training_table_hash": read_lineage(folder).get("training_table_hash", "")}
                   for name, folder in parents.items()]
    first = read_lineage(next(iter(parents.values())))
    write_lineage(output, {**fused_table_lineage(parent_rows), "parents": parent_rows,
                           "base_model": first.get("base_model"), "revision": first.get("revision")})
    summary = {**asdict(recipe), "weights": list(map(float, recipe.weights)), "r": _config(output)["r"],
               "modules_to_save": saved_modules, "parents": parent_rows}
    if recipe.method not in DENSITY_METHODS:
        summary.pop("density")
        summary.pop("seed")
    (output / FUSION_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def fused_table_lineage(parents: list[dict]) -> dict[str, str]:
    """The lineage columns `training_table` and `training_table_hash` of a fused adapter: each
    parent's `<adapter>:<training table>` and its table's hash, joined by "+" in the parents' order
    (e.g. "adapter_B:train_A+adapter_C:synth_B" and "<hash of train_A>+<hash of synth_B>")."""
    return {"training_table": "+".join(f"{p['adapter']}:{p['training_table']}" for p in parents),
            "training_table_hash": "+".join(p["training_table_hash"] for p in parents)}
