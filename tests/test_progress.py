"""The progress line: the planned total up front, an ETA with idle baselines, the job's phase, the terminal width."""
from __future__ import annotations

import io
import json
import re

from orchestrator.matrix import Cell
from orchestrator.progress import Progress, cell_estimate_s, read_phase

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pipe_keeps_one_plain_line_per_event():
    stream = io.StringIO()
    progress = Progress(0, stream, expected=4, cell_estimate=40.0)
    progress.start("mobilenet_v2 1.1 inference local rep 0")
    progress.finish("mobilenet_v2 1.1 inference local rep 0", "done")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[0/4] done 0, failed 0, remaining 4, ETA ~2m40s")  # 4 x 40 s, known up front
    assert lines[1].startswith("DONE   mobilenet_v2") and lines[2].startswith("[1/4] done 1")


def test_estimate_includes_idle_baselines():
    cells = [Cell(f"c{i}", {"duration_s": 10.0, "node_type": "local"}) for i in range(4)]
    without = cell_estimate_s(cells, idle_s=0)
    with_idle = cell_estimate_s(cells, idle_s=30, idle_reuse_s=0)  # a baseline before every cell
    assert with_idle == without + 30
    reused = cell_estimate_s(cells, idle_s=30, idle_reuse_s=3600)  # one baseline for the node type
    assert reused == without + 30 / 4


def test_phase_is_read_and_its_absence_tolerated(tmp_path):
    assert read_phase(tmp_path) is None
    (tmp_path / "phase.json").write_text("{garbage")
    assert read_phase(tmp_path) is None
    (tmp_path / "phase.json").write_text(json.dumps({"phase": "warmup", "at": "2026-12-01T00:00:00Z"}))
    assert read_phase(tmp_path) == "warm-up"
    progress = Progress(0, io.StringIO(), expected=2)
    progress.start("vgg_16 7.1 inference local rep 0", tmp_path)
    assert "(warm-up, 0s)" in progress.running_line()


def test_live_line_is_cut_to_the_terminal_width(tmp_path):
    stream = Terminal()
    progress = Progress(0, stream, expected=19 * 4, cell_estimate=100.0, width=40)
    label = "inception_resnet_v2 3.2 training a-node-type-with-a-long-name rep 9"
    progress.start(label, tmp_path)
    progress._last_draw = 0
    progress.tick()
    progress.finish(label, "done")
    progress.close()
    text = ANSI.sub("\n", stream.getvalue())
    live = [line for line in text.split("\n") if line.startswith("[")]
    assert live and all(len(line) <= 40 for line in live)
    assert any(line.startswith("[0/76]") for line in live)
