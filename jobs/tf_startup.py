"""Import TensorFlow without its C++ start-up lines (oneDNN, CPU feature guard, absl's pre-init warning).

TF_CPP_MIN_LOG_LEVEL does not reach them: they are written before absl's
logging is initialised. They all come during `import tensorflow`, so stderr
(fd 2) goes to a temporary file for the import only; afterwards every line
that is not known start-up noise is written back, so a real error is kept.
Standard library only: imported by the job before anything else.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:. ]+\d+ (port|cpu_feature_guard|cuda_dnn|cuda_fft|cuda_blas|cuda_executor|"
    r"dso_loader|cuda_diagnostics)\.cc:\d+\].*"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow with the appropriate "
    r"compiler flags\.)$")


def filter_noise(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line.rstrip("\n")))


def import_tensorflow():
    """`import tensorflow`, its start-up lines dropped; returns the module."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = filter_noise(capture.read().decode("utf-8", "replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
    return tensorflow
