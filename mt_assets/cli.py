"""The `mt-assets` command line: run the asset graph for a profile and look at its results."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _definitions(profile: str):
    os.environ["MT_ASSETS_PROFILE"] = profile
    from mt_assets.definitions import defs, profile as loaded

    return defs, loaded


def materialize(args: argparse.Namespace) -> int:
    """Materialize the selected assets (default: all) and their checks on the Dagster instance."""
    import dagster as dg

    defs, profile = _definitions(args.profile)
    job = defs.resolve_implicit_global_asset_job_def()
    graph = defs.resolve_asset_graph()
    selection = dg.AssetSelection.from_coercible(args.select) if args.select else dg.AssetSelection.all()
    keys = sorted(selection.resolve(graph), key=lambda k: k.to_user_string())
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    print(f"mt-assets: materializing {len(keys)} assets with profile {profile['name']} ({profile['file']})")
    result = job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False,
                                    tags={"mt_assets/profile": profile["name"]})
    failed_checks = [
        evaluation for evaluation in result.get_asset_check_evaluations() if not evaluation.passed
    ]
    for evaluation in failed_checks:
        print(f"  check {evaluation.asset_check_key.to_user_string()}: FAILED ({evaluation.severity.value})")
    lake = profile.get("data_lake", "data_lake")
    if not result.success:
        print(f"mt-assets: the run failed (run id {result.run_id}); see the log above", file=sys.stderr)
        return 1
    print(f"mt-assets: done. Run id {result.run_id}. Outputs are in {Path(lake).resolve() if '://' not in lake else lake}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mt-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("materialize", help="materialize assets and run their checks")
    run.add_argument("--profile", default=os.environ.get("MT_ASSETS_PROFILE", "demo"),
                     help="profile name (demo, paper) or path of a profile YAML file (default: demo)")
    run.add_argument("--select", default=None,
                     help="Dagster asset selection, e.g. 'train_A+' (default: every asset)")
    run.set_defaults(handler=materialize)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
