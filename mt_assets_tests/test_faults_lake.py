"""The fault suite, data lake and secrets: credentials inside URLs, lake paths, adapter integrity.

Counted in the session's one ledger (conftest.py), like test_faults.py.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import dagster as dg
import pytest

from mt_assets.lib.urls import credential_parts, redact_url
from mt_assets_tests.test_faults import (
    closed_port,
    every_file,
    failure_text,
    loopback,
    model_dir,  # noqa: F401 (fixture)
    new_lake,
    spec,
    tables,  # noqa: F401 (fixture)
    teacher,
)
from mt_assets_tests.fault_support import REPO_ROOT, materialize

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
                                                        caplog, capfd):
    with ledger.fault("secrets: user, password and token inside the teacher's base_url") as fault:
        caplog.set_level(logging.DEBUG)
        lakes = {name: new_lake(tmp_path, tables, name) for name in ("good", "not_found", "refused")}
        texts: dict[str, str] = {}
        home = tmp_path / "dagster_home"
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            with loopback(tables) as server:
                urls = {"good": credential_url(server.port), "not_found": credential_url(server.port, "/v2"),
                        "refused": credential_url(closed_port())}
                results = {name: materialize(spec(lakes[name], model_dir, teacher=teacher(url), synthesis=SYNTH),
                                             ["synth_B"], instance, raise_on_error=False)
                           for name, url in urls.items()}
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
                texts[f"event log of {name}"] = "\n".join(dg.serialize_value(e) for e in instance.all_logs(result.run_id))
                texts[f"materialization metadata of {name}"] = "\n".join(
                    str(e.event_specific_data) for e in result.get_asset_materialization_events())
                texts[f"step failure of {name}"] = failure_text(result)
            texts["exception"] = "".join(traceback.format_exception(raised.value))
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
