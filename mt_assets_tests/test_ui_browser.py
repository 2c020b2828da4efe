"""The Dagster UI in a real browser: `dagster dev` on a project-local instance, driven by Playwright
in Debian's headless Chromium (one server and one browser for every test here). It shows the graph's
groups, an asset's description, column schema and checks; a materialization of the whole demo graph
is launched from it, succeeds and carries the profile's tags; the BLEU chart is on bleu_chart's page;
after a second run (from the command line) bleu_table's Plots show one BLEU series per system. The
screenshot of bleu_chart's page is what the README shows: set MT_ASSETS_SCREENSHOT_DIR=docs to write
it there (with the demo's pretrained tiny model, built at data_lake/tiny_base_model as
`python3 dev.py demo` builds it, when it is not there yet).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mt_assets.defs.evaluation import SYSTEMS
from mt_assets.defs.profiles import PROFILE_TAG, load_profile, profile_tags
from mt_assets.lib.models.tiny import TinyModelSpec
from mt_assets_tests.e2e_support import tiny_base
from mt_assets_tests.ops_support import write_profile

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = "ui-bleu-chart.png"
RUN_TIMEOUT_S = 900

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's Chromium is not installed at {CHROMIUM}: "
                       "`apt-get install -y chromium` (.ci/run installs it)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(2)
    raise TimeoutError(f"dagster dev did not serve {url} in {timeout_s} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory, untrained_tiny_model):
    """`dagster dev` on a temporary instance (the project's dagster.yaml) with a small demo profile."""
    folder = tmp_path_factory.mktemp("ui")
    home = folder / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    if os.environ.get("MT_ASSETS_SCREENSHOT_DIR"):  # a representative picture: the demo's pretrained model
        model, steps = ROOT / "data_lake" / "tiny_base_model", TinyModelSpec.pretrain_steps  # as dev.py demo builds it
        tiny_base(model, steps).model_path()
        training = {}
    else:  # the UI's plumbing, not learning: an untrained model, one epoch per adapter
        model, steps = untrained_tiny_model, 0
        training = {"epochs": 1, "batch_size": 16}
    profile = write_profile(folder / "ui.yaml", folder / "lake", model, steps, executor={"type": "in_process"},
                            training=training)
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "DAGSTER_HOME": str(home), "MT_ASSETS_PROFILE": str(profile),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = folder / "dagster_dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-m", "mt_assets.definitions", "-h", "127.0.0.1",
             "-p", url.rsplit(":", 1)[1]],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_serving(url, process, log)
        yield url, folder, log
    finally:
        process.terminate()  # dagster dev stops its webserver, daemon and code servers
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever of its session is left
        except ProcessLookupError:
            pass
        process.wait()


@pytest.fixture(scope="module")
def page(dagster_ui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1440, "height": 1000})
        tab.set_default_timeout(60_000)
        yield tab
        browser.close()


def open_page(page, url: str) -> None:
    page.goto(url, wait_until="networkidle", timeout=120_000)
    skip = page.get_by_role("button", name="Skip")  # the first visit's "Join the Dagster community" dialog
    if skip.count() and skip.is_visible():
        skip.click()


def test_graph_shows_the_asset_groups(dagster_ui, page):
    url, _, _ = dagster_ui
    open_page(page, f"{url}/asset-groups")
    for group in ("data", "synthetic", "training", "evaluation"):
        page.get_by_role("button", name=group).first.wait_for()


def test_asset_page_shows_description_column_schema_and_checks(dagster_ui, page):
    url, _, _ = dagster_ui
    open_page(page, f"{url}/assets/train_A")
    page.get_by_text("The training side of the seeded split of opus_sample.").first.wait_for()
    for column in ("pair_id", "source_lang", "origin"):
        page.get_by_text(column, exact=True).first.wait_for()
    open_page(page, f"{url}/assets/test_A?view=checks")
    page.get_by_text("no_test_pair_in_train").first.wait_for()


@pytest.fixture(scope="module")
def ui_run(dagster_ui, page):
    """A materialization of the whole graph launched from the UI's Materialize all: its run page's URL,
    once the run is over."""
    url, _, log = dagster_ui
    open_page(page, f"{url}/asset-groups")
    page.get_by_role("button", name="Materialize all").click()
    view = page.locator('a[href^="/runs/"]', has_text="View").first  # the "Launched run ..." toast
    view.wait_for()
    run_url = url + view.get_attribute("href")

    open_page(page, run_url)
    status = page.get_by_text("Success", exact=True).or_(page.get_by_text("Failure", exact=True)).first
    status.wait_for(timeout=RUN_TIMEOUT_S * 1000)
    assert status.inner_text() == "Success", f"the run failed; dagster dev's log:\n{log.read_text()[-6000:]}"
    return run_url


def test_materialize_the_graph_from_the_ui_and_find_the_bleu_chart(dagster_ui, ui_run, page):
    url, folder, _ = dagster_ui
    open_page(page, f"{url}/assets/bleu_chart")  # its metadata: the chart as Markdown with an inline PNG
    row = page.locator("tr", has_text="bleu_chart").filter(has=page.get_by_text("Show Markdown")).first
    row.get_by_text("Show Markdown").click()
    chart = page.locator('img[alt="BLEU per system"]').first
    chart.wait_for(state="visible")
    assert chart.evaluate("image => image.complete && image.naturalWidth") > 200  # a decoded PNG
    assert (chart.get_attribute("src") or "").startswith("data:image/png;base64,")
    target = Path(os.environ.get("MT_ASSETS_SCREENSHOT_DIR") or folder) / SCREENSHOT
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=False)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 20_000


def test_a_run_launched_from_the_ui_carries_the_profile_tags(dagster_ui, ui_run, page):
    import dagster as dg

    _, folder, _ = dagster_ui
    tags = profile_tags(load_profile(str(folder / "ui.yaml")))
    open_page(page, ui_run)
    page.get_by_role("button", name="View tags and config").click()  # the run page's tags
    dialog = page.get_by_role("dialog")
    for key, value in tags.items():
        dialog.get_by_text(f"{key}: {value}", exact=True).wait_for()
    dialog.get_by_role("button", name="OK").click()
    with dg.DagsterInstance.from_config(str(folder / "dagster_home")) as instance:
        run = instance.get_run_by_id(ui_run.rstrip("/").rsplit("/", 1)[1])
    assert {key: run.tags.get(key) for key in tags} == tags


def test_bleu_table_plots_one_bleu_series_per_system_after_two_runs(dagster_ui, ui_run, page):
    import dagster as dg

    url, folder, _ = dagster_ui
    env = {**os.environ, "DAGSTER_HOME": str(folder / "dagster_home"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "mt_assets.cli", "materialize", "--profile", str(folder / "ui.yaml"),
                           "--select", "bleu_table"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(folder / "dagster_home")) as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={PROFILE_TAG: "ui"}))
        materializations = instance.fetch_materializations(dg.AssetKey("bleu_table"), limit=10).records
    assert len(materializations) == 2 and len(runs) == 2  # the UI's run and the command line's

    open_page(page, f"{url}/assets/bleu_table")
    page.get_by_role("button", name="Plots").first.click()
    page.locator("canvas").first.wait_for()
    labels = page.get_by_text(re.compile(r"^bleu/")).all_inner_texts()
    assert sorted(labels) == [f"bleu/{system}" for system in SYSTEMS]  # one plot of BLEU per system
