"""Three backends, one catalog: the backend-neutral ops, the backend choice, parameter parity,
forward agreement and one training step per model family on JAX and PyTorch.

TensorFlow-side checks run in this process (Keras is loaded with TensorFlow here). Keras fixes
its backend at import, so everything on JAX and PyTorch runs in a subprocess per backend
(tests/backend_probe.py, or the real `catalog --backend` command). What runs on every backend,
and why (CI is 2 cores; see docs/backends.md): parameter parity of all 19 tests at full size
(build only, ~30 s per backend); forward agreement and one training step for one or two models
per family at tiny inputs, chosen to exercise every op written for this project (TF-1 resize,
pixel shuffle, spectral norm, latent noise, masked convs, the diagonal LSTM, the aux head).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jobs import backends
from tests.conftest import ROOT, run_cli

OTHERS = ("jax", "torch")
# Forward agreement, per family; the training step for the models in TRAINED.
FAMILIES = {"classification": ("mobilenet_v2", "inception_v3"), "image-to-image": ("srgan", "dped"),
            "segmentation": ("pspnet", "spade"), "sequence": ("pixel_rnn", "lstm")}
TRAINED = ("inception_v3", "srgan", "pspnet", "pixel_rnn")
# fp32 forward agreement, relative to the largest output magnitude (measured: at most 8e-6, SPADE
# 3e-4 at its original 128² size; see docs/backends.md).
FORWARD_RTOL = 1e-3
LOSS_RTOL = 1e-3


def _python(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("KERAS_BACKEND", None)
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


# --- backend-neutral ops, checked against the TensorFlow ops they replace ---------------

@pytest.mark.parametrize("method, align_corners", [("bilinear", False), ("bilinear", True),
                                                   ("nearest", False), ("nearest", True)])
@pytest.mark.parametrize("size_in, size_out", [((5, 7), (10, 14)), ((9, 6), (4, 3)), ((1, 2), (6, 6)),
                                               ((60, 60), (15, 30)), ((8, 8), (8, 8))])
def test_resize_is_tf1_resize(method, align_corners, size_in, size_out):
    import tensorflow as tf

    from jobs.models.segmentation import Resize

    x = np.random.default_rng(0).uniform(-3, 3, (2, *size_in, 4)).astype(np.float32)
    ours = Resize(size_out, method=method, align_corners=align_corners)(x)
    if method == "nearest":
        theirs = tf.compat.v1.image.resize_nearest_neighbor(x, size_out, align_corners=align_corners)
    else:
        theirs = tf.compat.v1.image.resize_bilinear(x, size_out, align_corners=align_corners)
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=0, atol=2e-6)


def test_pixel_shuffle_is_depth_to_space():
    import tensorflow as tf

    from jobs.models.image_to_image import PixelShuffle

    x = np.random.default_rng(1).standard_normal((2, 3, 5, 4 * 6)).astype(np.float32)
    for scale in (2,):
        np.testing.assert_array_equal(np.asarray(PixelShuffle(scale)(x)), tf.nn.depth_to_space(x, scale).numpy())


def test_spectral_norm_helper_is_tf_l2_normalize():
    import tensorflow as tf

    from jobs.models.segmentation import _l2_normalize

    x = np.random.default_rng(2).standard_normal((1, 37)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(_l2_normalize(x)), tf.math.l2_normalize(x, axis=-1).numpy(), rtol=1e-6)


# --- choosing the backend -----------------------------------------------------------

def test_job_modules_do_not_import_keras_and_the_cell_selects_the_backend():
    code = ("import sys; import jobs.runner, jobs.catalog, jobs.workload, jobs.backends, jobs.hostinfo; "
            "assert 'keras' not in sys.modules, 'a job module imports keras: the backend would be locked'; "
            "from jobs import backends; backends.select_backend('torch'); import keras; "
            "print(keras.backend.backend())")
    assert _python("-c", code).stdout.strip().splitlines()[-1] == "torch"


def test_select_backend_refuses_another_backend_once_keras_is_loaded():
    import keras

    assert keras.backend.backend() == "tensorflow"
    backends.select_backend("tensorflow")  # the one loaded: fine
    with pytest.raises(RuntimeError, match="imported with the tensorflow backend.*select jax"):
        backends.select_backend("jax")
    with pytest.raises(KeyError, match="unknown backend 'tf'"):
        backends.select_backend("tf")


def test_each_execution_belongs_to_its_backends():
    assert backends.check_execution("tensorflow", "xla") == []
    assert backends.check_execution("torch", "compile") == []
    assert backends.check_execution("jax", "graph") == []
    (key, message), = backends.check_execution("jax", "xla")
    assert key == "execution" and message == "'xla' is tensorflow's: jax runs graph, eager"
    (_, message), = backends.check_execution("tensorflow", "compile")
    assert message == "'compile' is torch's: tensorflow runs graph, xla, eager"
    (_, message), = backends.check_execution("torch", "graph")
    assert message.startswith("'graph' is tensorflow and jax's: torch runs eager, compile")
    assert [b.default_execution for b in backends.BACKENDS.values()] == ["graph", "graph", "eager"]


# --- parameter parity: all 19 tests at full size on TensorFlow and PyTorch ---------------
# JAX is left out of the full-size build: it compiles every initializer, about 2 minutes of CI for the
# catalog (the suite must stay under 30 minutes on 2 cores). There, parity is checked on the probes below:
# each probe model is built on JAX, loads TensorFlow's weights one to one (same variables, same shapes) and
# must count the same total and trainable parameters. `catalog --backend jax` still counts at full size.

@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_catalog_counts_every_model_exactly_on(backend):
    done = run_cli("catalog", "--backend", backend, "--json", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    tests = json.loads(done.stdout)
    tests = [t for t in tests if t.get("family") != "shallow"]  # the scikit-learn family (#13) has no Keras model
    assert len(tests) == 19
    wrong = [(t["name"], t["total_params"], t["trainable_params"]) for t in tests
             if (t["total_params"], t["trainable_params"]) != (t["reference_total_params"],
                                                                t["reference_trainable_params"])]
    assert wrong == []


# --- forward agreement and training steps, per family ----------------------------------

@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """Run the probe on TensorFlow first (it writes the shared weights), then on JAX and PyTorch."""
    folder = tmp_path_factory.mktemp("probe")
    names = [n for family in FAMILIES.values() for n in family if n not in TRAINED]
    for backend in ("tensorflow", *OTHERS):
        _python("-m", "tests.backend_probe", backend, str(folder), "--train", *TRAINED)
        _python("-m", "tests.backend_probe", backend, str(folder), *names)
    return folder


def _load(folder, name, backend):
    return np.load(folder / f"{name}.{backend}.npz")


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("name", [n for family in FAMILIES.values() for n in family])
def test_forward_agrees_with_tensorflow(probes, name, backend):
    reference = _load(probes, name, "tensorflow")["forward"].astype(np.float64)
    result = _load(probes, name, backend)
    ours = result["forward"].astype(np.float64)
    assert ours.shape == reference.shape
    scale = np.max(np.abs(reference))
    assert scale > 0 and np.max(np.abs(ours - reference)) <= FORWARD_RTOL * scale
    assert "cpu" in str(result["device"]).lower()  # the placement probe names the device


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("name", [n for family in FAMILIES.values() for n in family])
def test_parameter_counts_agree_with_tensorflow(probes, name, backend):
    reference, result = _load(probes, name, "tensorflow"), _load(probes, name, backend)
    assert int(reference["total_params"]) > 0
    assert (int(result["total_params"]), int(result["trainable_params"])) == \
        (int(reference["total_params"]), int(reference["trainable_params"]))


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("name", TRAINED)
def test_one_training_step(probes, name, backend):
    reference, result = _load(probes, name, "tensorflow"), _load(probes, name, backend)
    assert np.isfinite(result["loss"])
    assert abs(float(result["loss"]) - float(reference["loss"])) <= LOSS_RTOL * abs(float(reference["loss"]))
    assert result["moved"].all()  # the update reached the first and the last trainable variable
    if name == "inception_v3":  # the aux head is dead code: no gradient, no update
        assert result["aux_still"].size > 0 and result["aux_still"].all()


@pytest.mark.parametrize("backend", OTHERS)
def test_mixed_precision_on(backend, tmp_path):
    _python("-m", "tests.backend_probe", backend, str(tmp_path), "--precision", "mixed_float16", "mixed_bfloat16")
    for precision, dtype in (("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")):
        result = np.load(tmp_path / f"precision.{precision}.{backend}.npz")
        assert list(result["compute_dtypes"]) == [dtype] and str(result["output_dtype"]) == dtype
        assert bool(result["applied"]) and np.isfinite(result["loss"])


# --- the backend axis, end to end: sweep -> local launcher -> job -> collect -----------

def test_sweep_over_three_backends_through_the_local_launcher(sweep_file, tmp_path):
    import pandas as pd

    from tests.conftest import tiny_sweep

    text = tiny_sweep("backends-e2e", phases="[inference]").replace(
        "  node_types: [local]", "  node_types: [local]\n  backends: [tensorflow, jax, torch]").replace(
        "  execution: eager\n", "")  # each backend's default execution
    done = run_cli("sweep", sweep_file(text), "--output", tmp_path / "results", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    campaign = tmp_path / "results" / "backends-e2e"
    table = pd.read_csv(campaign / "results.csv")
    assert sorted(table["backend"]) == ["jax", "tensorflow", "torch"] and set(table["state"]) == {"done"}
    assert dict(zip(table["backend"], table["execution"])) == {"tensorflow": "graph", "jax": "graph",
                                                               "torch": "eager"}
    assert (table["throughput_samples_per_s"] > 0).all() and (table["iterations_measured"] == 3).all()
    summary = pd.read_csv(campaign / "summary.csv")
    assert sorted(summary["backend"]) == ["jax", "tensorflow", "torch"]  # a group per backend
    versions = {"tensorflow": "2.", "jax": "0.", "torch": "2."}
    for cell in campaign.glob("cells/*"):
        result = json.loads((cell / "result.json").read_text())
        backend = result["params"]["backend"]
        assert result["software"]["backend"] == backend == result["devices"]["backend"]
        assert result["software"]["backend_version"].startswith(versions[backend])
        assert "cpu" in result["devices"]["compute_device"].lower()
        assert result["devices"]["execution"] == result["params"]["execution"]
        assert result["model"]["total_params"] == result["model"]["reference_total_params"]


def test_bad_backend_settings_are_refused_before_anything_runs(sweep_file, tmp_path, monkeypatch):
    from orchestrator.errors import UserError
    from orchestrator.matrix import expand
    from orchestrator.spec import load_sweep

    path = sweep_file("""
name: bad
matrix:
  tests: [mobilenet_v2]
  phases: [inference]
  backends: [tensorflow, jax, torch]
defaults:
  execution: xla
include:
  - backend: torch
    execution: graph
launcher: local
""")
    done = run_cli("sweep", path, "--output", tmp_path / "out")
    assert done.returncode == 2 and not (tmp_path / "out").exists()  # nothing launched, nothing written
    assert f"{path}:7: defaults.execution: 'xla' is tensorflow's: jax runs graph, eager" in done.stderr
    assert f"{path}:10: include[0].execution: 'graph' is tensorflow and jax's: torch runs eager, compile" \
        in done.stderr
    unknown = run_cli("expand", sweep_file("name: u\nmatrix:\n  tests: [mobilenet_v2]\n  backends: [tf]\n"))
    assert unknown.returncode == 2 and ":4: matrix.backends[0]: must be 'tensorflow', 'jax' or 'torch'" \
        in unknown.stderr

    # Not installed (this machine has all three: the check is made to look at a missing module).
    monkeypatch.setattr(backends, "is_installed", lambda name: name != "jax")
    with pytest.raises(UserError) as error:
        expand(load_sweep(str(sweep_file("name: m\nmatrix:\n  tests: [mobilenet_v2]\n  backends: [torch, jax]\n"))))
    assert ":4: matrix.backends[1]: backend jax is not installed; install it with: pip install" in str(error.value)
