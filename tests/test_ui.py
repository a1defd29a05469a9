"""The MLflow UI as a user sees it: a gradcam run on the tracking server, opened in headless Chromium.

Screenshots are kept in outputs/ui/ (CI artifacts)."""

from __future__ import annotations

import contextlib
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.infra import convlab, report, tracking_server, unavailable

pytestmark = [pytest.mark.ui, pytest.mark.server, pytest.mark.e2e]

SCREENSHOTS = REPO / "outputs" / "ui"
OVERLAY = "gradcam/chelsea_overlay.png"
#: a fresh profile is added per launch; no background traffic (this machine's network is closed)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic"]


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if not path:
        unavailable("Debian's Chromium is not installed: apt-get install chromium chromium-driver")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("Playwright's Python package is not installed: pip install -e '.[ui]'")
    return path


@contextlib.contextmanager
def _browser_page(height: int) -> Iterator:
    """A page of the system's headless Chromium in a fresh profile (closed afterwards)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=_chromium(), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": height})
        try:
            yield browser.new_page()
        finally:
            browser.close()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _chromium()
    with tracking_server(tmp_path_factory.mktemp("ui-server")) as running:
        yield running


def test_the_mlflow_ui_shows_a_gradcam_run_its_metrics_and_overlay(server, tmp_path):
    convlab("tracking=server", "task=gradcam", "model=mobilenet_v2", "dataset=photos", cwd=tmp_path,
            tracking_uri=server.uri)
    client = MlflowClient(tracking_uri=server.uri)
    experiment = client.get_experiment_by_name("gradcam")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    top1 = run.data.metrics["top1_prob"]
    width, height = _png_size(Path(client.download_artifacts(run.info.run_id, OVERLAY, str(tmp_path))))
    run_url = f"{server.uri}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    with _browser_page(height=1200) as page:
        page.goto(run_url, wait_until="load")
        page.get_by_text(run.info.run_name, exact=True).first.wait_for(timeout=60_000)
        metrics = page.get_by_text("top1_prob", exact=True).first
        metrics.wait_for(timeout=30_000)
        page.get_by_text(str(top1)[:6]).first.wait_for(timeout=30_000)  # its value, in the Metrics table
        page.get_by_text("Finished", exact=True).first.wait_for(timeout=30_000)
        body = page.inner_text("body")
        assert run.info.run_id in body
        metrics.scroll_into_view_if_needed()  # the run page scrolls inside its own pane
        page.screenshot(path=str(SCREENSHOTS / "gradcam_run_overview.png"))

        page.goto(f"{run_url}/artifacts/{OVERLAY}", wait_until="load")
        page.get_by_text(OVERLAY).first.wait_for(timeout=60_000)
        # the overlay itself, decoded by the browser at its real size (not a broken-image icon)
        page.wait_for_function(
            "([w, h]) => [...document.images].some(i => i.complete && i.naturalWidth === w"
            " && i.naturalHeight === h)", arg=[width, height], timeout=60_000)
        page.screenshot(path=str(SCREENSHOTS / "gradcam_overlay.png"))
    report(f"MLflow UI in headless Chromium: run {run.info.run_id} shows top1_prob={top1:.4f} and "
           f"{OVERLAY} ({width}x{height}); screenshots in {SCREENSHOTS.relative_to(REPO)}/")


def test_a_train_run_opens_in_the_model_training_view_with_its_datasets_and_model(server, tmp_path):
    """The link the job prints opens the model-training view; the runs table's Dataset column names the
    splits; the Models tab lists the LoggedModel and its registered version."""
    import re

    from tests.conftest import TINY_TRAIN

    proc = convlab("tracking=server", *TINY_TRAIN, "tracking.register_model=ui_convnet", cwd=tmp_path,
                   tracking_uri=server.uri)
    [link] = re.findall(r"\[convlab\] (http\S+#/experiments/\S+)", proc.stdout)
    client = MlflowClient(tracking_uri=server.uri)
    [run] = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    experiment = f"{server.uri}/#/experiments/{run.info.experiment_id}"
    assert link.startswith(f"{experiment}/runs/{run.info.run_id}?")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    with _browser_page(height=1000) as page:
        page.goto(link, wait_until="load")
        page.get_by_text(run.info.run_name, exact=True).first.wait_for(timeout=60_000)
        page.get_by_text("test_accuracy", exact=True).first.wait_for(timeout=30_000)
        _assert_model_training_view(page)
        page.screenshot(path=str(SCREENSHOTS / "train_run_page.png"))

        page.get_by_role("link", name="Runs").first.click()  # the sidebar, view parameter kept
        page.get_by_text("cats_vs_dogs-train", exact=False).first.wait_for(timeout=60_000)
        page.get_by_text("Dataset", exact=True).first.wait_for(timeout=30_000)
        _assert_model_training_view(page)
        page.screenshot(path=str(SCREENSHOTS / "train_runs_dataset_column.png"))

        page.goto(f"{experiment}/models?workflowType=machine_learning", wait_until="load")
        page.get_by_text("Ready", exact=True).first.wait_for(timeout=60_000)  # the LoggedModel's status
        models = page.inner_text("body")
        assert "ui_convnet" in models and "v1" in models  # its registered version
        _assert_model_training_view(page)
        page.screenshot(path=str(SCREENSHOTS / "train_models_tab.png"))
    report(f"MLflow UI in headless Chromium: run {run.info.run_id} in the model-training view, Dataset column "
           f"and Models tab filled; screenshots in {SCREENSHOTS.relative_to(REPO)}/")


def _assert_model_training_view(page) -> None:
    sidebar = page.inner_text("body")
    assert "Models" in sidebar and "Model registry" in sidebar
    assert "Evaluation runs" not in sidebar and "Judges" not in sidebar  # the GenAI view's entries


def test_a_sweeps_children_show_their_probe_images_as_image_charts_with_a_step_slider(server, tmp_path):
    """Image timelines (task.probes, log_image key/step): each child's Model metrics tab has an image
    chart per key, its picture decoded; the runs table's chart view shows both children's pictures side
    by side in one image chart."""
    from runner.mlflow_images import image_timelines
    from tests.conftest import TINY_TRAIN

    convlab("-m", "tracking=server", *TINY_TRAIN, "task.probes.enabled=true", "task.probes.images=1",
            "task.learning_rate=1e-3,1e-4", cwd=tmp_path, tracking_uri=server.uri)
    client = MlflowClient(tracking_uri=server.uri)
    experiment_id = client.get_experiment_by_name("train").experiment_id
    children = [run for run in client.search_runs([experiment_id]) if "mlflow.parentRunId" in run.data.tags]
    assert len(children) == 2
    [key] = image_timelines(children[0].info.run_id, client)
    assert all(image_timelines(child.info.run_id, client) == {key: [0]} for child in children)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    with _browser_page(height=1000) as page:
        for index, child in enumerate(children):
            page.goto(f"{server.uri}/#/experiments/{experiment_id}/runs/{child.info.run_id}/model-metrics"
                      "?workflowType=machine_learning", wait_until="load")
            page.get_by_text(key, exact=True).first.wait_for(timeout=60_000)  # the image chart's title
            # the overlay itself, decoded by the browser (not a broken-image icon; data: URLs are the UI's icons)
            page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth > 0"
                                   " && !i.src.startsWith('data:'))", timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / f"sweep_child{index}_probe_chart.png"))

        # the runs table's chart view compares the runs the table shows; it folds a sweep's children under
        # their parent's row (a searchFilter on the parent's id did not unfold them), so unfold it
        parent = client.get_run(children[0].data.tags["mlflow.parentRunId"])
        page.goto(f"{server.uri}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
                  "&compareRunsMode=CHART", wait_until="load")
        parent_row = page.locator(".ag-row").filter(has_text=parent.info.run_name[:40])
        parent_row.locator("button").first.click(timeout=60_000)  # the row's expander
        card = page.wait_for_function(SMALLEST_CARD_WITH_PICTURES, arg=[key, len(children)], timeout=90_000)
        chart = card.json_value()
        page.screenshot(path=str(SCREENSHOTS / "sweep_children_in_one_image_chart.png"))
    assert chart["text"].count(key) == 1, chart  # one chart ...
    for child in children:  # ... with each child's picture
        assert sum(f"run_uuid={child.info.run_id}" in source for source in chart["pictures"]) == 1, chart
    report(f"MLflow UI in headless Chromium: image chart {key} on both children's Model metrics tab, and one "
           f"chart-view image chart with both children's pictures; screenshots in "
           f"{SCREENSHOTS.relative_to(REPO)}/sweep_child*_probe_chart.png, sweep_children_in_one_image_chart.png")


#: the smallest element around a chart title ``key`` holding ``count`` decoded pictures (not the UI's
#: data: icons): its text and the pictures' addresses; null until the chart has drawn them
SMALLEST_CARD_WITH_PICTURES = """([key, count]) => {
  const titles = [...document.querySelectorAll('body *')].filter(
      e => e.childElementCount === 0 && e.textContent.trim() === key);
  for (const title of titles) {
    for (let card = title.parentElement; card; card = card.parentElement) {
      const pictures = [...card.querySelectorAll('img')].filter(
          i => i.complete && i.naturalWidth > 0 && !i.src.startsWith('data:'));
      if (pictures.length >= count) return {text: card.innerText, pictures: pictures.map(i => i.src)};
    }
  }
  return null;
}"""
