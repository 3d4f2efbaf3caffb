"""The HTML report in a real headless Chromium: it renders offline, a screenshot is taken, content is there,
the energy evidence included (each cell's gate verdict, the ± with the systematic term, the trace figure).

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
from tests.test_report import INVALID_CELL, evidence_campaign

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,6000"]
WIDTH, HEIGHT = 1280, 6000
INVALID_BACKGROUND = (0xFD, 0xE2, 0xE1)  # the template's mark of an invalid verdict


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
    return make_report(evidence_campaign(tmp_path_factory.mktemp("browser") / "synthetic")).html


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
    marked = (np.abs(image[..., :3] * 255 - INVALID_BACKGROUND) < 3).all(axis=2)
    assert marked.sum() > 500, "the invalid verdict is not marked on the page"

    dom = run_chromium(tmp_path, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-3000:]
    html = dom.stdout
    assert "Benchmark report: synthetic" in html
    assert "Table 2: Inference: EC, CE and D per nominal work" in html
    assert "Throughput and energy efficiency, synthetic" in html
    assert "estimated: codecarbon load model" in html and "measured:" not in html
    # four paper figures, reported top-1 against inference energy (#13: the seed paper's accuracy question),
    # and the invalid cell's power trace (#14)
    assert html.count("<svg") == 6 and "fig1_inference_energy_per_sample" in html
    assert f'id="fig-trace_{INVALID_CELL}"' in html and "measurement window" in html
    # The evidence (#14): the ± with the systematic term per group, the gate's verdict per cell, linked.
    groups = html[html.index('id="evidence-groups"'):]
    groups = groups[:groups.index("</table>")]
    assert groups.count("<tr") == 5 and "± with systematic" in groups and groups.count("±82%") == 4
    cells = html[html.index('id="evidence-cells"'):]
    cells = cells[:cells.index("</table>")]
    assert cells.count('class="verdict-invalid"') == 1 and cells.count('class="verdict-valid"') == 11
    assert f'href="#fig-trace_{INVALID_CELL}"' in cells and "samples cover 70% of the window" in cells
    assert "reported_accuracy_vs_inference_energy" in html
    assert "Fig. 1: inference energy per sample" in html  # a real caption under the figure
    assert 'id="meters"' in html and "alpha-1" in html and "Test CPU 9000" in html
