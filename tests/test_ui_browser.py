"""`lll ui --study NAME` on a real study, looked at in a real headless Chromium.

A tiny search logs to SQLite; `lll ui` serves the MLflow UI on 127.0.0.1 (only there: the
listening sockets are checked); Chromium (Debian's package, driven by Playwright, never a
downloaded browser) opens the study's runs page, finds the experiment, the parent run and every
trial's nested run, and saves a screenshot. The UI server is stopped at the end whatever happens.
"""

from __future__ import annotations

import contextlib
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
from helpers import free_port, tiny_pool_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.extended]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
POOL_YAML = tiny_pool_yaml("tiny-ui", 120, 80)
STUDY, TRIALS = "ui-study", 3


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the whole process group (lll → mlflow ui → uvicorn), SIGKILL it after 5 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def group_pids(pgid: int) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == pgid:
                    pids.add(int(entry))
    return pids


def listening_addresses(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets in LISTEN state that ``pids`` own (read from /proc)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    found = []
    for family, table in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                f = row.split()
                if f[3] == "0A" and f[9] in inodes:
                    hexip, hexport = f[1].split(":")
                    raw = bytes.fromhex(hexip)
                    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                    found.append((socket.inet_ntop(family, raw), int(hexport, 16)))
    return found


def browser_driver():
    """Playwright's sync API. Without Debian's Chromium the browser test is skipped (CI installs
    it); with Chromium present, a missing Playwright (a declared test dependency) is a failure."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (what .ci/run does)")
    try:
        import playwright.sync_api
    except ImportError as exc:
        pytest.fail(f"{CHROMIUM} is present but Playwright is not importable ({exc}): pip install -e '.[test]'")
    return playwright.sync_api


def test_playwright_is_installed_where_chromium_is():
    """Checked first and without a search, so that a broken install fails in a second."""
    assert browser_driver().sync_playwright


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ui")
    (d / "pool.yaml").write_text(POOL_YAML)
    args = ["search", "--pool", "pool.yaml", "--strategies", "naive", "--trials", str(TRIALS), "--seeds", "1"]
    args += ["--epochs", "1", "--workers", "1", "--study", STUDY, "--validate", "0"]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    res = subprocess.run(
        [sys.executable, "-m", "search.cli", *args], cwd=d, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return d


@pytest.fixture(scope="module")
def ui(searched, request):
    """`lll ui --study NAME --port P` in the search's folder; returns (base URL, process, log)."""
    port = free_port()
    log = searched / "ui.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "search.cli", "ui", "--study", STUDY, "--port", str(port)],
            cwd=searched,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    request.addfinalizer(lambda: stop_group(proc))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`lll ui` exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            if resp.status == 200:
                return url, proc, log
        time.sleep(0.5)
    pytest.fail(f"`lll ui` did not answer within 240 s:\n{log.read_text()[-3000:]}")


def test_ui_listens_on_loopback_only(ui):
    url, proc, _log = ui
    port = int(url.rsplit(":", 1)[1])
    sockets = listening_addresses(group_pids(proc.pid))
    assert any(p == port for _, p in sockets), f"nothing of `lll ui` listens on {port}: {sockets}"
    exposed = [s for s in sockets if not (s[0].startswith("127.") or s[0] in ("::1", "::ffff:127.0.0.1"))]
    assert not exposed, f"the MLflow UI listens beyond loopback: {exposed}"


def test_ui_prints_the_study_runs_page(ui):
    url, _proc, log = ui
    text = log.read_text()
    assert f"at {url}" in text
    assert re.search(rf"runs of study {STUDY}: {re.escape(url)}/#/experiments/\d+/runs\?workflowType=", text), text


def test_browser_shows_the_study_and_its_runs(ui, tmp_path):
    playwright = browser_driver()
    _url, _proc, log = ui
    page_url = re.search(r"runs of study \S+: (\S+)", log.read_text()).group(1)
    shot = tmp_path / "mlflow-ui.png"
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(page_url, timeout=120_000)
            page.get_by_text(f"{TRIALS + 1} matching runs").wait_for(timeout=120_000)  # parent + trials
            assert page.get_by_text(STUDY).count() >= 1, "the study's experiment name is not on the page"
            parent = page.locator("[role=gridcell]", has_text=f"search {STUDY}").first
            parent.wait_for(timeout=30_000)
            parent.locator("button").first.click()  # expand the parent run: its nested trial runs
            for n in range(TRIALS):
                page.get_by_text(re.compile(rf"^trial {n}: ")).first.wait_for(timeout=60_000)
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
    keep = os.environ.get("LLL_UI_SCREENSHOT")  # e.g. to look at it: LLL_UI_SCREENSHOT=/tmp/ui.png
    if keep:
        shutil.copy(shot, keep)
