"""TensorFlow's C++ start-up lines stay out of job logs; anything else written during the import is kept."""
from __future__ import annotations

import os
import subprocess
import sys

from jobs.tf_startup import filter_noise
from tests.conftest import ROOT


def test_known_lines_are_dropped_others_kept():
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1796162785.178360     649 port.cc:153] oneDNN custom operations are on.\n"
            "I0000 00:00:1796162785.210236     649 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n"
            "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
            "appropriate compiler flags.\n"
            "E0000 00:00:1 cuda_executor.cc:1] failed call to cuInit: a real problem\n"
            "Traceback (most recent call last):\n")
    assert filter_noise(text) == ("E0000 00:00:1 cuda_executor.cc:1] failed call to cuInit: a real problem\n"
                                  "Traceback (most recent call last):\n")


def test_a_real_import_prints_no_start_up_lines():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", "from jobs.tf_startup import import_tensorflow as i; "
                           "tf = i(); print(tf.constant(2).numpy() + 1)"], capture_output=True, text=True,
                          timeout=300, env=dict(env, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "3"
    assert "oneDNN" not in done.stderr and "cpu_feature_guard" not in done.stderr
    assert "absl::InitializeLog" not in done.stderr


def test_selecting_tensorflow_silences_its_start_up_for_every_caller():
    """`catalog` (and any caller of select_backend) used to print the start-up lines: the quiet import was the job's."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", "from jobs.backends import select_backend; "
                           "select_backend('tensorflow'); import keras, numpy; "
                           "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]); "
                           "print(m(numpy.zeros((1, 3))).shape)"], capture_output=True, text=True,
                          timeout=300, env=dict(env, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "(1, 2)"
    assert "oneDNN" not in done.stderr and "absl::InitializeLog" not in done.stderr
