"""The fault suite, data lake and secrets: credentials inside URLs, lake paths, adapter integrity.

Counted in the session's one ledger (conftest.py), like test_faults.py.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mt_assets import cli
from mt_assets.defs.evaluation import evaluation_assets
from mt_assets.defs.io_manager import DataLakeIOManager, LakeError
from mt_assets.defs.synthetic import OpenAICompatibleTeacher
from mt_assets.lib.hashing import folder_hash
from mt_assets.lib.data.pairs import make_pairs
from mt_assets.lib.synth.teachers.base import TeacherConfigError
from mt_assets.lib.urls import credential_parts, redact_url
from mt_assets_tests.test_faults import (
    closed_port,
    every_file,
    failure_text,
    hidden_debris,
    loopback,
    metadata,
    model_dir,  # noqa: F401 (fixture)
    new_lake,
    spec,
    tables,  # noqa: F401 (fixture)
    teacher,
)
from mt_assets_tests.fault_support import ASSETS, PRETRAIN_STEPS, REPO_ROOT, materialize, run_resources
from mt_assets_tests.ops_support import write_profile

URL_USER, URL_PASSWORD, URL_TOKEN = "canaryuser7f3a9d21c6", "canarypass5e8b0c44a1", "canarytoken9d1e6a73f2"
"""Credentials inside the teacher's base_url: none may show up anywhere but in the requests."""
SYNTH = {"size": 20, "pairs_per_request": 5}


def credential_url(port: int, path: str = "/v1") -> str:
    return f"http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:{port}{path}?token={URL_TOKEN}"


@pytest.mark.parametrize(("url", "shown"), [
    (f"http://{URL_USER}:{URL_PASSWORD}@host:8000/v1?token={URL_TOKEN}", "http://***@host:8000/v1?***"),
    ("https://router.huggingface.co/v1", "https://router.huggingface.co/v1"),
    (f"s3://{URL_USER}@bucket/lake", "s3://***@bucket/lake"),
    ("/srv/lake", "/srv/lake"),
])
def test_redact_url_hides_user_information_and_query(url, shown):
    assert redact_url(url) == shown


def test_credential_parts_keep_what_the_server_needs():
    bare, query, userinfo = credential_parts(f"http://{URL_USER}:p%40ss@host/v1?token={URL_TOKEN}&a=")
    assert (bare, query, userinfo) == ("http://host/v1", {"token": URL_TOKEN, "a": ""}, (URL_USER, "p@ss"))


def test_the_teacher_url_can_come_from_an_environment_variable(monkeypatch):
    monkeypatch.setenv("MT_TEST_TEACHER_URL", credential_url(8000))
    built = OpenAICompatibleTeacher(base_url_env="MT_TEST_TEACHER_URL").build(None, None, None)
    assert built.base_url == credential_url(8000) and URL_PASSWORD not in repr(built)
    both = OpenAICompatibleTeacher(base_url=credential_url(8000), base_url_env="MT_TEST_TEACHER_URL")
    with pytest.raises(TeacherConfigError, match="base_url and teacher.base_url_env, not both") as raised:
        both.build(None, None, None)
    assert URL_PASSWORD not in str(raised.value)
    monkeypatch.delenv("MT_TEST_TEACHER_URL")
    with pytest.raises(TeacherConfigError, match="environment variable MT_TEST_TEACHER_URL, which is not set"):
        OpenAICompatibleTeacher(base_url_env="MT_TEST_TEACHER_URL").build(None, None, None)


def cli_materialize(profile: dict, selection: str, dagster_home: Path, folder: Path) -> subprocess.CompletedProcess:
    """`mt-assets materialize` in a process of its own on a profile file extending demo: what a user
    sees on the console, with the run's event log and compute logs kept in `dagster_home`."""
    path = folder / "profile.yaml"
    path.write_text(json.dumps({"extends": "demo", **profile}))  # JSON is YAML
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "MT_ASSETS_PROFILE": str(path),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "mt_assets.cli", "materialize", "--select", selection],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def test_credentials_in_the_teacher_url_show_up_nowhere(ledger, model_dir, tables, tmp_path,  # noqa: F811
                                                        caplog, capfd, monkeypatch):
    with ledger.fault("secrets: user, password and token inside the teacher's base_url") as fault:
        caplog.set_level(logging.DEBUG)
        lakes = {name: new_lake(tmp_path, tables, name) for name in ("good", "not_found", "refused")}
        texts: dict[str, str] = {}
        home = tmp_path / "dagster_home"
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            with loopback(tables) as server:
                # the good run reads the URL from an environment variable, the others from settings
                monkeypatch.setenv("MT_TEST_TEACHER_URL", credential_url(server.port))
                settings = {"good": teacher("", base_url_env="MT_TEST_TEACHER_URL"),
                            "not_found": teacher(credential_url(server.port, "/v2")),
                            "refused": teacher(credential_url(closed_port()))}
                urls = {name: setting["base_url"] for name, setting in settings.items()}
                results = {name: materialize(spec(lakes[name], model_dir, teacher=setting, synthesis=SYNTH),
                                             ["synth_B"], instance, raise_on_error=False)
                           for name, setting in settings.items()}
                with pytest.raises(Exception) as raised:
                    materialize(spec(lakes["refused"], model_dir, teacher=teacher(urls["refused"]),
                                     synthesis=SYNTH), ["synth_B"], instance)
            good, not_found, refused = results["good"], results["not_found"], results["refused"]
            assert good.success and not not_found.success and not refused.success
            basic = "Basic " + base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()
            sent = [r for r in server.requests if r.path.startswith("/v1/")]
            assert sent and all(r.authorization == basic and r.path.endswith(f"?token={URL_TOKEN}") for r in sent), \
                "the credentials did reach the server"
            assert "HTTP 404" in failure_text(not_found) and "http://***@127.0.0.1" in failure_text(not_found)
            assert "connection failed" in failure_text(refused) and "setting base_url" in failure_text(refused)
            for name, result in results.items():
                texts[f"run config of {name}"] = json.dumps(instance.get_run_by_id(result.run_id).run_config,
                                                            default=str)
                texts[f"event log of {name}"] = "\n".join(
                    dg.serialize_value(e) for e in instance.all_logs(result.run_id))
                texts[f"materialization metadata of {name}"] = "\n".join(
                    str(e.event_specific_data) for e in result.get_asset_materialization_events())
                texts[f"step failure of {name}"] = failure_text(result)
            texts["exception"] = "".join(traceback.format_exception(raised.value))
            texts["resource settings (UI) of good"] = json.dumps(
                {k: v.model_dump() for k, v in run_resources(spec(lakes["good"], model_dir, teacher=settings["good"],
                                                                  synthesis=SYNTH)).items()
                 if hasattr(v, "model_dump")}, default=str)
        cli_home, cli_lake = tmp_path / "cli_home", new_lake(tmp_path, tables, "cli")
        cli_home.mkdir()
        cli = cli_materialize({"data_lake": str(cli_lake), "base_model": {"path": str(model_dir)},
                               "teacher": {"type": "openai", **teacher(credential_url(closed_port()), max_attempts=2)},
                               "synthesis": {**SYNTH, "cache_dir": str(cli_lake / ".teacher_cache")}},
                              "synth_B", cli_home, tmp_path)
        texts["console of mt-assets materialize"] = cli.stdout + cli.stderr
        assert cli.returncode != 0 and "attempt 1/2 failed" in cli.stderr, cli.stderr[-3000:]
        texts["log records"] = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
        captured = capfd.readouterr()
        texts["stdout and stderr"] = captured.out + captured.err
        assert "attempt 1/4 failed" in texts["log records"], "the retry warnings were searched"
        files = list(every_file(home, cli_home, cli_lake, *lakes.values()))
        assert any(p.suffix == ".db" for p in files), "the instance keeps runs and events on disk"
        compute_logs = [p for p in files if p.suffix in (".err", ".out")]
        assert any("attempt 1/2 failed" in p.read_text(errors="replace") for p in compute_logs), \
            "the compute logs hold the retry warnings"
        assert (lakes["good"] / "synth_B.parquet").is_file()
        places = {**texts, **{str(path): path.read_bytes() for path in files}}
        for secret in (URL_USER, URL_PASSWORD, URL_TOKEN):
            fault.no_secret(secret, places)


# --- where the lake is and what it holds ------------------------------------------------------------

def pair_table() -> pd.DataFrame:
    return make_pairs(["Guten Tag", "Danke", "Tschüss"], ["Bonjour", "Merci", "Salut"], "de", "fr", "unit")


@dg.asset
def produced() -> pd.DataFrame:
    return pair_table()


@dg.asset
def consumed(produced: pd.DataFrame) -> pd.DataFrame:
    return produced.head(1)


def lake_run(base_path: str, instance, selection=None, raise_on_error=True) -> dg.ExecuteInProcessResult:
    return dg.materialize([produced, consumed], resources={"io_manager": DataLakeIOManager(base_path=base_path)},
                          instance=instance, selection=selection, raise_on_error=raise_on_error)


def test_a_lake_under_home_or_a_variable_is_expanded(ledger, tmp_path, instance, monkeypatch):
    with ledger.fault("lake: data_lake ~/lake and $VAR/lake") as fault:
        home, work = tmp_path / "home", tmp_path / "work"
        home.mkdir(), work.mkdir()
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("MT_TEST_LAKE_ROOT", str(tmp_path / "elsewhere"))
        monkeypatch.chdir(work)
        result = lake_run("~/lake", instance)
        fault.kept(len(pd.read_parquet(home / "lake" / "consumed.parquet")) == 1, "the table under ~/lake")
        assert metadata(result, "produced")["path"] == str(home / "lake" / "produced.parquet")
        assert list(work.iterdir()) == [], "nothing was written to a folder literally named ~"
        lake_run("${MT_TEST_LAKE_ROOT}/lake", instance)
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "elsewhere" / "lake" / "produced.parquet"),
                                      pair_table())
        monkeypatch.delenv("MT_TEST_LAKE_ROOT")
        with pytest.raises(LakeError, match=r"data_lake '\$MT_TEST_LAKE_ROOT/lake' names environment variable\(s\) "
                                            r"\['MT_TEST_LAKE_ROOT'\] that are not set"):
            lake_run("$MT_TEST_LAKE_ROOT/lake", instance)
        assert list(work.iterdir()) == []


@pytest.mark.parametrize("case", ["an empty file", "a file cut off after its header"])
def test_a_table_write_that_produces_a_bad_file_fails_and_keeps_the_previous(ledger, lake, instance, monkeypatch,
                                                                             case):
    with ledger.fault(f"lake: a table write that silently produces {case}") as fault:
        assert lake_run(str(lake), instance, selection=["produced"]).success
        real = pd.DataFrame.to_parquet

        def silently_bad(self, handle, index=False):  # a full disk or a broken mount that reports no error
            if case == "a file cut off after its header":
                real(self.head(0), handle, index=index)

        monkeypatch.setattr(pd.DataFrame, "to_parquet", silently_bad)
        result = lake_run(str(lake), instance, selection=["produced"], raise_on_error=False)
        monkeypatch.undo()
        assert not result.success and not result.get_asset_materialization_events()
        found = "0 rows" if case == "a file cut off after its header" else "an unreadable file (ArrowInvalid"
        assert f"written for {lake / 'produced.parquet'} reads back as {found}" in failure_text(result)
        assert "not 3 rows; the previous table was left in place" in failure_text(result)
        assert "setting data_lake" in failure_text(result)
        fault.kept(pd.read_parquet(lake / "produced.parquet").equals(pair_table()), "the previous table")
        assert hidden_debris(lake, "produced") == []


def test_a_truncated_lake_table_fails_naming_it_and_the_fix(ledger, lake, instance):
    with ledger.fault("lake: a truncated Parquet table") as fault:
        assert lake_run(str(lake), instance, selection=["produced"]).success
        table = lake / "produced.parquet"
        table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
        result = lake_run(str(lake), instance, selection=["consumed"], raise_on_error=False)
        assert not result.success
        assert f"asset produced: {table} is not a readable Parquet table" in failure_text(result)
        assert "Materialize produced again (mt-assets materialize --select produced)" in failure_text(result)
        fault.kept(not (lake / "consumed.parquet").exists(), "nothing was made from the damaged table")


# --- adapters: checked against their recorded content hash before use -----------------------------

EVALUATED = ["synth_B", "combined_C", "adapter_B", "adapter_C", "adapter_D", "adapter_E", "translations"]


def evaluate(lake: Path, model_dir: Path, selection: list[str], instance, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize([*ASSETS, *evaluation_assets], resources=run_resources(spec(lake, model_dir)),
                          selection=selection, instance=instance, **kwargs)


@pytest.fixture(scope="module")
def trained_lake(tmp_path_factory, model_dir, tables) -> Path:  # noqa: F811
    """A lake with every adapter trained and test_A translated (the fault suite's short recipe)."""
    lake = new_lake(tmp_path_factory.mktemp("trained"), tables)
    with dg.instance_for_test() as instance:
        assert evaluate(lake, model_dir, EVALUATED, instance).success
    return lake


def damage(weights: Path, case: str) -> None:
    if case == "64 KiB of weights overwritten":
        data = bytearray(weights.read_bytes())
        start = 8 + int.from_bytes(data[:8], "little")  # past the safetensors header: tensor bytes only
        end = min(len(data), start + 64 * 1024)
        data[start:end] = bytes(range(256)) * ((end - start) // 256) + bytes((end - start) % 256)
        weights.write_bytes(bytes(data))
    elif case == "weights file emptied":
        weights.write_bytes(b"")
    else:
        weights.unlink()


@pytest.mark.parametrize("case", ["64 KiB of weights overwritten", "weights file emptied", "weights file missing"])
def test_a_damaged_adapter_stops_evaluation_naming_it_and_the_fix(  # noqa: F811 (model_dir)
        ledger, trained_lake, model_dir, tmp_path, instance, case):
    with ledger.fault(f"adapters: {case}") as fault:
        lake = tmp_path / "lake"
        shutil.copytree(trained_lake, lake)
        weights = lake / "adapter_B" / "adapter_model.safetensors"
        intact = pd.read_parquet(lake / "translations.parquet")
        damage(weights, case)
        result = evaluate(lake, model_dir, ["translations"], instance, raise_on_error=False)
        failure = failure_text(result)
        assert not result.success and not result.get_asset_materialization_events()
        assert f"asset adapter_B at {lake / 'adapter_B'} does not match the content hash recorded" in failure, failure
        assert "materialize adapter_B again (mt-assets materialize --select adapter_B)" in failure
        fault.kept(pd.read_parquet(lake / "translations.parquet").equals(intact), "the last good translations")

        profile = write_profile(tmp_path / "profile.yaml", lake, model_dir, PRETRAIN_STEPS)
        (tmp_path / "in.txt").write_text("Guten Tag.\n")
        with pytest.raises(LakeError, match="asset adapter_B at .* does not match the content hash recorded"):
            cli.main(["translate", str(tmp_path / "in.txt"), "--profile", str(profile), "--adapter", "adapter_B"])
        if case != "64 KiB of weights overwritten":  # an adapter folder given by path has no record to check
            why = "no weights file" if case == "weights file missing" else "the weights file .* is empty"
            with pytest.raises(ValueError, match=f"adapter {lake / 'adapter_B'}: {why}.*Give the folder of a "
                                                 "complete adapter"):
                cli.main(["translate", str(tmp_path / "in.txt"), "--profile", str(profile),
                          "--adapter", str(lake / "adapter_B")])


def test_evaluation_runs_on_checked_adapters(trained_lake):
    translations = pd.read_parquet(trained_lake / "translations.parquet")
    for system in "BCDE":
        adapter = trained_lake / f"adapter_{system}"
        assert (trained_lake / ".content_hashes" / f"adapter_{system}").read_text() == folder_hash(adapter)
        assert set(translations.loc[translations["system"] == system, "adapter_hash"]) == {folder_hash(adapter)}
