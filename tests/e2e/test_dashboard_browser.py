"""The dashboard in a real browser: `streamlit run` on a free port, headless Debian Chromium via Playwright.
Every page loads without an exception box, the heatmap renders, and approving with the right token moves
`champion` — checked in the registry (MLflow in the slow variant), not through the dashboard.

    .venv/bin/python -m pytest tests/e2e -m e2e                 # embedded default store (~20 s)
    .venv/bin/python -m pytest tests/e2e -m "e2e and slow"      # the same against S3 + MLflow servers

Skips (with the reason) when /usr/bin/chromium or Playwright is missing: `apt-get install -y chromium`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard import desk, fixture  # noqa: E402
from dashboard.screenshots import CHROMIUM, PAGES, exceptions, free_port, launch, open_page, serve, stop, wait_healthy  # noqa: E402
from sleepcycle.store import open_registry, open_store  # noqa: E402
from sleepcycle.store.settings import load as load_settings  # noqa: E402

pytestmark = pytest.mark.e2e
TOKEN = "e2e-approver-token"


@pytest.fixture(scope="module")
def playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (dev extra)")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright):
    b = launch(playwright)
    yield b
    b.close()


def _mlflow_env(state: Path) -> tuple[dict[str, str], list]:
    from integration.helpers import local_servers

    s3 = local_servers.start_s3(state)
    local_servers.create_bucket(s3.url, "sleepcycle")
    try:
        mlflow = local_servers.start_mlflow(state, s3.url, "sleepcycle")
    except BaseException:
        local_servers.stop(s3)
        raise
    env = {
        "SLEEPCYCLE_S3_ENDPOINT": s3.url,
        "SLEEPCYCLE_S3_BUCKET": "sleepcycle",
        "MLFLOW_TRACKING_URI": mlflow.url,
        **local_servers.CREDENTIALS,
    }
    return env, [lambda: local_servers.stop(mlflow), lambda: local_servers.stop(s3)]


@pytest.fixture(scope="module", params=["local", pytest.param("mlflow", marks=pytest.mark.slow)])
def dashboard(request, playwright, tmp_path_factory):
    """A served dashboard over the fixture lineage: (url, settings, what the fixture built, home)."""
    tmp = tmp_path_factory.mktemp(f"dashboard-{request.param}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SLEEPCYCLE_", "AWS_", "PREFECT_"))}
    env.update({"SLEEPCYCLE_HOME": str(tmp / "home"), desk.TOKEN_ENV: TOKEN})
    cleanups = []
    if request.param == "mlflow":
        extra, cleanups = _mlflow_env(tmp / "servers")
        env.update(extra)
    settings = load_settings(env)
    store = open_store(settings)
    built = fixture.build(store, open_registry(settings, store=store), settings.line, tmp / "lineage")
    port = free_port()
    proc = serve(env, port, tmp / "streamlit.log")
    try:
        yield wait_healthy(port, proc), settings, built, tmp / "home"
    finally:
        stop(proc)
        for cleanup in cleanups:
            cleanup()


@pytest.fixture
def page(browser):
    p = browser.new_page(viewport={"width": 1400, "height": 1000})
    yield p
    p.close()


def test_every_page_loads_without_an_exception(dashboard, page):
    url = dashboard[0]
    for path, (_, title) in PAGES.items():
        open_page(page, f"{url}/{path}", title)
        assert exceptions(page) == [], title
        assert "Traceback" not in page.inner_text("body"), title
        if title == "Retention":
            heatmap = page.locator('[data-testid="stVegaLiteChart"]').first
            heatmap.locator("canvas, svg").first.wait_for(timeout=15_000)
            box = heatmap.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100
        if title == "Cycle detail":
            page.locator('[data-testid="stGraphVizChart"] svg').first.wait_for(timeout=15_000)


def test_approve_in_the_browser_moves_champion(dashboard, page):
    url, settings, built, home = dashboard
    registry = open_registry(settings)  # a fresh client: the dashboard process is not asked
    line, before = settings.line, built["champion_version"]
    assert registry.champion(line).version == before

    def submit(token: str) -> None:
        open_page(page, f"{url}/approvals", "Approvals")
        page.get_by_label("Your name").fill("ana")
        page.get_by_label("Note (why)").fill("retention holds")
        page.get_by_label("Approver token").fill(token)
        page.get_by_role("button", name="Approve and promote").click()

    submit("not-the-token")
    page.get_by_text("Refused: wrong approver token").wait_for(timeout=15_000)
    assert registry.champion(line).version == before

    submit(TOKEN)
    page.get_by_text("Cycle 5 approved").wait_for(timeout=30_000)
    champion = registry.champion(line)
    assert champion.version == built["versions"][5] and champion.tags["decision_by"] == "ana"
    if settings.tracking_uri:  # and as any MLflow client sees it
        from mlflow import MlflowClient

        mv = MlflowClient(settings.tracking_uri).get_model_version_by_alias(f"sleepcycle-{line}", "champion")
        assert int(mv.version) == champion.version
    outcomes = [json.loads(x)["outcome"] for x in (home / desk.AUDIT).read_text().splitlines()]
    assert outcomes == ["refused", "done"]
