"""Faults of GGUF base models: a package that is not installed, a file whose hash differs from the
pin, an architecture transformers cannot dequantize, and definitions that must load without any of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mt_assets.defs.models import GgufBaseModel
from mt_assets.defs.profiles import build_resources, load_profile
from mt_assets.lib.models import gguf


def write_gguf(path: Path, architecture: str) -> Path:
    """A small but valid GGUF file of `architecture` holding one tensor."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_tensor("weight", np.arange(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_definitions_load_without_the_package_or_any_hashing(tmp_path, ledger):
    with ledger.fault("GGUF package missing at definitions load") as fault:
        profile_file = tmp_path / "gguf.yaml"
        cache = tmp_path / "cache"
        profile_file.write_text(f"extends: tiny\nbase_model: {{type: gguf, package: no_such_gguf_package, "
                                f"cache_dir: {cache}}}\n")
        from mt_assets.definitions import build_definitions

        defs = build_definitions(load_profile(str(profile_file)))
        assert isinstance(defs.resources["base_model"], GgufBaseModel)
        assert not cache.exists()  # nothing was looked up, hashed or dequantized
        fault.kept(True, "definitions")


def test_missing_package_names_the_pip_command(tmp_path, ledger):
    with ledger.fault("GGUF package not installed") as fault:
        model = GgufBaseModel(package="no_such_gguf_package", cache_dir=str(tmp_path / "cache"))
        with pytest.raises(gguf.GgufError, match=r"base_model.package.*not installed.*pip install no-such-gguf-package"):
            model.model_path()
        fault.kept(not (tmp_path / "cache" / model.sha256).exists(), "cache")


def test_hash_that_differs_from_the_pin_stops_before_dequantizing(tmp_path, ledger):
    with ledger.fault("GGUF file with another SHA-256") as fault:
        file = write_gguf(tmp_path / "model.gguf", "gemma3")
        pinned = "0" * 64
        model = GgufBaseModel(path=str(file), sha256=pinned, cache_dir=str(tmp_path / "cache"))
        with pytest.raises(gguf.GgufError) as raised:
            model.model_path()
        message = str(raised.value)
        assert gguf.sha256_of([file]) in message and pinned in message and "base_model.sha256" in message
        assert str(file) in message
        fault.kept(not (tmp_path / "cache" / pinned).exists() and file.is_file(), "cache and file")


def test_architecture_transformers_cannot_dequantize_is_named(tmp_path, ledger):
    with ledger.fault("GGUF of an unsupported architecture") as fault:
        file = write_gguf(tmp_path / "odd.gguf", "nonesuch")
        model = GgufBaseModel(path=str(file), sha256=gguf.sha256_of([file]), cache_dir=str(tmp_path / "cache"))
        with pytest.raises(gguf.GgufError, match=r"cannot dequantize odd.gguf.*nonesuch.*'gemma3'.*type hub"):
            model.model_path()
        leftovers = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
        fault.kept(leftovers == [], "no half-built cache folder")
        assert leftovers == []


def test_missing_gguf_file_is_named(tmp_path, ledger):
    with ledger.fault("GGUF file missing") as fault:
        model = GgufBaseModel(path=str(tmp_path / "absent.gguf"), cache_dir=str(tmp_path / "cache"))
        with pytest.raises(gguf.GgufError, match=r"absent.gguf not found \(setting base_model.path\)"):
            model.model_path()
        fault.kept(True, "nothing to keep")


def test_package_with_chunks_hashes_as_one_file(tmp_path):
    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(b"first half,")
    parts[1].write_bytes(b" second half")
    whole = tmp_path / "whole"
    whole.write_bytes(b"first half, second half")
    assert gguf.sha256_of(parts) == gguf.sha256_of([whole])


def test_profile_gguf_keys_are_accepted(tmp_path):
    profile_file = tmp_path / "gguf.yaml"
    profile_file.write_text("extends: tiny\nbase_model: {type: gguf, path: /models/x.gguf, sha256: abc, "
                            "cache_dir: /tmp/x, dtype: auto, device: cpu}\n")
    model = build_resources(load_profile(str(profile_file)))["base_model"]
    assert (model.path, model.sha256, model.cache_dir) == ("/models/x.gguf", "abc", "/tmp/x")
