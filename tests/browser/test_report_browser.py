"""The HTML report in a real headless Chromium: it renders offline, a screenshot is taken, content is there.

Chromium comes from Debian's packages, installed by tests/browser/install-chromium.sh
(CI runs it first). When it is missing this test fails, never skips.
"""
from __future__ import annotations

import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest

from orchestrator.report import make_report
from tests import synthetic_results as syn

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,2400"]
WIDTH, HEIGHT = 1280, 2400


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed: run `bash tests/browser/install-chromium.sh` "
                    "(Debian package `chromium`) before the tests", pytrace=False)
    return path


def run_chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    campaign = syn.campaign(folder / "synthetic", node_types=("alpha",), sources=syn.ESTIMATED)
    return make_report(campaign).html


def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "report.png"
    done = run_chromium(tmp_path, f"--screenshot={shot}", report.as_uri())
    assert shot.is_file(), f"no screenshot; chromium said:\n{done.stderr[-3000:]}"
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (HEIGHT, WIDTH)
    gray = image[..., :3].mean(axis=2)
    assert gray.std() > 0.05, "the screenshot is blank"
    assert (gray[:120] < 0.3).mean() > 0.001, "no dark text at the top of the page"
    colourful = np.abs(image[..., 0] - image[..., 2]) > 0.2  # the viridis bars are far from grey
    assert colourful.mean() > 0.002, "no coloured figure rendered"

    dom = run_chromium(tmp_path, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-3000:]
    html = dom.stdout
    assert "Benchmark report: synthetic" in html
    assert "Table 2: Inference: EC, CE and D per nominal work" in html
    assert "Throughput and energy efficiency, synthetic" in html
    assert "estimated: codecarbon load model" in html and "measured:" not in html
    # four paper figures, and reported top-1 against inference energy (#13: the seed paper's accuracy question)
    assert html.count("<svg") == 5 and "fig1_inference_energy_per_sample" in html
    assert "reported_accuracy_vs_inference_energy" in html
    assert "Fig. 1: inference energy per sample" in html  # a real caption under the figure
    assert 'id="meters"' in html and "alpha-1" in html and "Test CPU 9000" in html
