#!/usr/bin/env python3
"""Set up mt_assets in a local virtual environment and run it: the README's two commands.

    python3 dev.py demo    # install, then materialize the whole asset graph on the demo profile (Gemma 3 270M)
    python3 dev.py demo tiny   # the same on the tiny profile (a tiny GPT-Neo built here: a few minutes)
    python3 dev.py test    # install, then run the test suite (arguments go to pytest)

Also: `python3 dev.py ui` starts the Dagster UI on the project-local instance, and
`python3 dev.py lock` rewrites requirements.lock from the current environment.
Only the Python standard library is used here, so this runs on a fresh machine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
LOCK = ROOT / "requirements.lock"
STAMP = VENV / ".installed"
PIP_QUIET = ["-qq", "--disable-pip-version-check", "--progress-bar", "off"]
"""pip prints a line per package without -q (hundreds); its warnings and errors still show with it."""


def say(message: str) -> None:
    print(f"[dev.py] {message}", flush=True)


def run(*command: str | Path, env: dict | None = None) -> None:
    subprocess.run([str(c) for c in command], check=True, cwd=ROOT, env=env)


def setup() -> None:
    """Create .venv and install the locked dependencies and the project, once per lock change."""
    if sys.version_info < (3, 11):
        sys.exit(f"mt_assets needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        say(f"creating the virtual environment {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256(LOCK.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    say("installing the locked dependencies (a few minutes the first time)")
    pip = [BIN / "python", "-m", "pip", "install", *PIP_QUIET]
    run(*pip, "-r", LOCK)
    run(*pip, "--no-deps", "-e", ROOT)
    STAMP.write_text(wanted)


def project_env() -> dict:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(ROOT / ".dagster_home"))
    env.setdefault("MT_ASSETS_PROFILE", "demo")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def demo(profile: str = "demo") -> None:
    setup()
    env = project_env()
    env["MT_ASSETS_PROFILE"] = profile
    run(BIN / "mt-assets", "materialize", "--profile", profile, env=env)
    say(f"outputs: {ROOT / 'data_lake'} (tables as .parquet, adapters and charts as folders)")
    say("results: .venv/bin/mt-assets bleu   (the BLEU table); chart: data_lake/bleu_chart/")
    say("the Dagster UI with this run's history: python3 dev.py ui   then open http://127.0.0.1:3000")


def test(extra: list[str]) -> None:
    setup()
    env = project_env()
    env.pop("DAGSTER_HOME")  # tests make their own temporary instances
    run(BIN / "python", "-m", "pytest", *extra, env=env)


def ui() -> None:
    setup()
    env = project_env()
    say(f"Dagster UI on http://127.0.0.1:3000 (instance {env['DAGSTER_HOME']}); Ctrl-C stops it")
    env["VIRTUAL_ENV"] = str(VENV)  # dg runs the project in this environment (--use-active-venv)
    # dg reads the project (code location mt_assets) from pyproject.toml's [tool.dg];
    # `dagster dev -w workspace.yaml` starts the same UI
    run(BIN / "dg", "dev", "--use-active-venv", "-h", "127.0.0.1", "-p", "3000", env=env)


def lock() -> None:
    frozen = subprocess.run([BIN / "python", "-m", "pip", "freeze", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout.splitlines()
    lines = [line.split("+")[0] if line.startswith("torch==") else line for line in frozen
             if line and not line.startswith(("mt_assets", "-e "))]
    LOCK.write_text("# Exact versions installed by dev.py; regenerate with: python3 dev.py lock\n"
                    + "\n".join(sorted(lines, key=str.lower)) + "\n")
    say(f"wrote {LOCK} ({len(lines)} packages)")


def main(argv: list[str]) -> None:
    commands = {"demo": lambda: demo(argv[1] if len(argv) > 1 else "demo"), "test": lambda: test(argv[1:]),
                "ui": ui, "lock": lock}
    if not argv or argv[0] not in commands:
        sys.exit(__doc__)
    try:
        commands[argv[0]]()
    except subprocess.CalledProcessError as err:
        sys.exit(err.returncode)


if __name__ == "__main__":
    main(sys.argv[1:])
