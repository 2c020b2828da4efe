"""System E: adapter_E, adapter_B and adapter_C merged into one adapter (lib.lora.fusion), in the
`gpu` pool. It reads the two adapters only: never test_A, so nothing it chooses is tuned on the test."""

import tempfile
from pathlib import Path

import dagster as dg

from mt_assets.defs.common import GPU_POOL, GPU_TAGS
from mt_assets.defs.io_manager import Folder
from mt_assets.defs.models import BaseModel
from mt_assets.defs.versioning import versioned
from mt_assets.lib.lora.fusion import FusionRecipe, field_defaults, field_types, fuse_adapters

PARENTS = ("adapter_B", "adapter_C")
"""The adapters adapter_E merges, in the order of `fusion.weights`."""

Fusion = type("Fusion", (dg.ConfigurableResource,), {
    "__module__": __name__,
    "__doc__": """How adapter_E merges adapter_B and adapter_C (profile section `fusion`): one setting per
    field of lib.lora.fusion.FusionRecipe, with its type, bounds and default (an even linear merge).""",
    "__annotations__": dict(field_types()),
    **field_defaults(),
    "recipe": lambda self: FusionRecipe(**{name: getattr(self, name) for name in field_types()}),
})


@dg.asset(
    ins={name: dg.AssetIn(name) for name in PARENTS},
    group_name="training",
    kinds={"pytorch", "peft"},
    pool=GPU_POOL,
    op_tags=GPU_TAGS,
    code_version="1",
    description="adapter_B and adapter_C merged into one LoRA adapter with PEFT's add_weighted_adapter "
    "(setting fusion.method: linear, ties, dare_ties or cat; fusion.weights [w_B, w_C]), with both parents' "
    "lineage. Not trained: it has no training log.",
)
def adapter_E(context: dg.AssetExecutionContext, adapter_B: Path, adapter_C: Path, base_model: BaseModel,
              fusion: Fusion) -> dg.Output[Folder]:
    recipe = fusion.recipe()
    output = Path(tempfile.mkdtemp(prefix="adapter_E-")) / "adapter"
    # the IO manager has checked each parent folder against its recorded content hash
    summary = fuse_adapters(base_model.load_model(), {"adapter_B": adapter_B, "adapter_C": adapter_C}, recipe,
                            output, base_model.reference())
    context.log.info(f"Merged adapter_B and adapter_C ({recipe.method}, weights {summary['weights']}) "
                     f"into a rank-{summary['r']} adapter")
    parents = {f"{p['adapter']}_hash": p["adapter_hash"] for p in summary["parents"]}
    context.add_output_metadata({
        "method": recipe.method, "weights": summary["weights"], "r": summary["r"],
        **({"density": recipe.density, "seed": recipe.seed} if "density" in summary else {}),
        **parents,
        "training_table_hashes": dg.MetadataValue.json(
            {p["training_table"]: p["training_table_hash"] for p in summary["parents"]}),
        "base_model": base_model.reference()["base_model"],
    })
    return versioned(Folder(output))


FUSED_ADAPTERS = ("adapter_E",)
"""Adapters merged, not trained: they have no training log or loss curve."""
fusion_assets = [adapter_E]
