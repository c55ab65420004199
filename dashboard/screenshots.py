"""`make screenshots`: a PNG of every dashboard page in docs/, from headless Chromium on a fixture lineage.

    .venv/bin/python -m dashboard.screenshots              # -> docs/dashboard-{overview,retention,cycle,approvals}.png
    .venv/bin/python -m dashboard.screenshots --out /tmp/shots

Chromium's own `--screenshot` catches only Streamlit's loading skeleton (the app arrives over a websocket
in real time), so Playwright drives Debian's Chromium (/usr/bin/chromium; Playwright's own browser
download fails on these machines) and waits for the content. The same helpers start and stop the server
for the browser tests (tests/e2e).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# page url path -> (file name stem, the title the page shows when it has rendered)
PAGES = {
    "": ("overview", "Overview"),
    "retention": ("retention", "Retention"),
    "cycle?cycle=3": ("cycle", "Cycle detail"),
    "approvals": ("approvals", "Approvals"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    """`streamlit run dashboard/app.py` on 127.0.0.1:port, in its own process group (stopped by PID)."""
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "dashboard" / "app.py"),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",  # no "Deploy" button: this is an operator's tool, not an app to publish
    ]
    out = open(log, "wb")  # noqa: SIM115 - the server's own log, closed when the process is stopped
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60) -> str:
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return url
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (streamlit and nothing else: it was started in a new session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def launch(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)


def open_page(page, url: str, title: str, timeout_ms: int = 30_000) -> None:
    """Navigate and wait, in real time, until the page's title shows and nothing is still running."""
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stSkeleton\"]')"
        " && !document.querySelector('[data-testid=\"stStatusWidget\"] img')",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(1500)  # charts and the graphviz layout draw after the data arrives


def exceptions(page) -> list[str]:
    """Text of every exception box Streamlit shows (st.exception, or an uncaught error in a page)."""
    return page.locator('[data-testid="stException"]').all_inner_texts()


def capture(page, path: Path) -> None:
    # Streamlit scrolls inside its main container, so a "full page" shot is one viewport: grow the viewport
    # to the content's height first.
    height = page.evaluate(
        "() => { const m = document.querySelector('[data-testid=\"stMainBlockContainer\"]');"
        " return Math.ceil((m ? m.scrollHeight : document.body.scrollHeight) + 80); }"
    )
    page.set_viewport_size({"width": 1400, "height": max(800, min(int(height), 6000))})
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    args = p.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    from dashboard import fixture
    from sleepcycle.store import open_registry, open_store
    from sleepcycle.store.settings import load as load_settings

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sleepcycle-shots-") as tmp:
        home = Path(tmp) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SLEEPCYCLE_", "AWS_", "PREFECT_"))}
        env.update({"SLEEPCYCLE_HOME": str(home), "SLEEPCYCLE_APPROVER_TOKEN": "screenshot"})
        settings = load_settings(env)
        store = open_store(settings)
        fixture.build(store, open_registry(settings, store=store), settings.line, Path(tmp) / "lineage")
        try:  # some sleep pressure for the overview, when this checkout has a wake buffer
            from sleepcycle import wake

            notes = [{"text": f"Day 6 note {i}: Ada Velm met Bo Tarsk in Velmora."} for i in range(64)]
            wake.add_records(notes, line=settings.line, home=home)
        except ImportError:
            pass
        port = free_port()
        proc = serve(env, port, Path(tmp) / "streamlit.log")
        try:
            url = wait_healthy(port, proc)
            with sync_playwright() as pw:
                browser = launch(pw)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                for path, (stem, title) in PAGES.items():
                    open_page(page, f"{url}/{path}", title)
                    if errors := exceptions(page):
                        raise RuntimeError(f"{title} shows an exception: {errors[0][:300]}")
                    target = args.out / f"dashboard-{stem}.png"
                    capture(page, target)
                    page.set_viewport_size({"width": 1400, "height": 900})
                    print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
                browser.close()
        finally:
            stop(proc)
            if proc.returncode not in (0, -signal.SIGTERM):
                shutil.copy(Path(tmp) / "streamlit.log", args.out / "screenshots-streamlit.log")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
