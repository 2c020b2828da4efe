"""Tier 3: the data lake IO manager round-trips tables and folders atomically, with metadata."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mt_assets.defs.io_manager import DataLakeIOManager, Folder
from mt_assets.lib.hashing import folder_hash, table_hash
from mt_assets.lib.data.pairs import make_pairs


def table() -> pd.DataFrame:
    return make_pairs(["Guten Tag", "Danke"], ["Bonjour", "Merci"], "de", "fr", "unit")


def test_table_round_trip_with_metadata(lake: Path, instance):
    @dg.asset
    def produced() -> pd.DataFrame:
        return table()

    @dg.asset
    def consumed(produced: pd.DataFrame) -> pd.DataFrame:
        return produced.assign(target=produced["target"].str.upper())

    result = dg.materialize([produced, consumed], resources={"io_manager": DataLakeIOManager(base_path=str(lake))},
                            instance=instance)
    assert result.success
    stored = pd.read_parquet(lake / "produced.parquet")
    pd.testing.assert_frame_equal(stored, table())
    metadata = result.asset_materializations_for_node("produced")[0].metadata
    assert metadata["dagster/row_count"].value == 2
    assert metadata["content_hash"].value == table_hash(table())
    assert metadata["path"].value == str(lake / "produced.parquet")
    assert list(pd.read_parquet(lake / "consumed.parquet")["target"]) == ["BONJOUR", "MERCI"]
    assert not [p for p in lake.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_folder_round_trip_replaces_previous_version(lake: Path, tmp_path: Path, instance):
    built = tmp_path / "built"

    @dg.asset
    def artifact() -> Folder:
        return Folder(built)

    @dg.asset
    def reader(artifact) -> pd.DataFrame:
        return pd.DataFrame({"text": [(Path(artifact) / "weights.txt").read_text()]})

    resources = {"io_manager": DataLakeIOManager(base_path=str(lake))}
    for version in ("v1", "v2"):
        built.mkdir()
        (built / "weights.txt").write_text(version)
        (built / f"only-in-{version}").write_text("x")
        assert dg.materialize([artifact, reader], resources=resources, instance=instance).success
        assert not built.exists(), "the folder is moved into the lake, not kept twice"
    assert sorted(p.name for p in (lake / "artifact").iterdir()) == ["only-in-v2", "weights.txt"]
    assert pd.read_parquet(lake / "reader.parquet")["text"][0] == "v2"
    assert [p.name for p in lake.iterdir() if p.name.startswith(".")] == [".content_hashes"], "no debris"
    assert [p.name for p in (lake / ".content_hashes").iterdir()] == ["artifact"], "no debris"
    assert (lake / ".content_hashes" / "artifact").read_text() == folder_hash(lake / "artifact"), "hash recorded"


def test_a_failed_write_leaves_the_previous_table_in_place(lake: Path, instance, monkeypatch):
    @dg.asset
    def produced() -> pd.DataFrame:
        return table()

    resources = {"io_manager": DataLakeIOManager(base_path=str(lake))}
    assert dg.materialize([produced], resources=resources, instance=instance).success

    def crash(self, handle, index=False):
        handle.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)
    result = dg.materialize([produced], resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    monkeypatch.undo()
    pd.testing.assert_frame_equal(pd.read_parquet(lake / "produced.parquet"), table())


def test_loading_an_unmaterialized_asset_says_so(lake: Path, instance):
    @dg.asset
    def never_made() -> pd.DataFrame:
        return table()

    @dg.asset
    def needs_it(never_made: pd.DataFrame) -> pd.DataFrame:
        return never_made

    with pytest.raises(FileNotFoundError, match="never_made has not been materialized"):
        dg.materialize([never_made, needs_it], resources={"io_manager": DataLakeIOManager(base_path=str(lake))},
                       instance=instance, selection=[needs_it])


def test_a_versioned_output_is_hashed_once_and_its_hash_is_version_record_and_metadata(lake: Path, tmp_path: Path,
                                                                                    instance, monkeypatch):
    from mt_assets.defs import io_manager, versioning
    from mt_assets.defs.versioning import versioned
    from mt_assets.lib import hashing

    hashed = []
    for module in (io_manager, versioning):  # the real hash functions, counted
        for name in ("folder_hash", "table_hash"):
            real = getattr(hashing, name)
            monkeypatch.setattr(module, name, lambda value, real=real, name=name: hashed.append(name) or real(value))
    built = tmp_path / "built"
    built.mkdir()
    (built / "weights.txt").write_text("w")

    @dg.asset
    def artifact() -> dg.Output[Folder]:
        return versioned(Folder(built))

    @dg.asset
    def produced() -> dg.Output[pd.DataFrame]:
        return versioned(table(), metadata={"note": "kept"})

    result = dg.materialize([artifact, produced], resources={"io_manager": DataLakeIOManager(base_path=str(lake))},
                            instance=instance)
    assert result.success
    assert sorted(hashed) == ["folder_hash", "table_hash"]  # one hash per output
    folder = result.asset_materializations_for_node("artifact")[0]
    recorded = (lake / ".content_hashes" / "artifact").read_text()
    assert recorded == folder_hash(lake / "artifact") == folder.metadata["content_hash"].value
    assert folder.tags["dagster/data_version"] == recorded
    rows = result.asset_materializations_for_node("produced")[0]
    assert rows.metadata["content_hash"].value == table_hash(table()) == rows.tags["dagster/data_version"]
    assert rows.metadata["note"].value == "kept" and rows.metadata["dagster/row_count"].value == 2
