"""The one place for per-backend code: TensorFlow, JAX and PyTorch under Keras 3.

The models in jobs/models are backend-neutral (keras.ops only). What differs
per backend lives here: selecting the backend before Keras is imported, the
inference and training steps (same semantics: sum of squared errors, Adam,
BatchNorm in inference mode, no update off the loss path), device
synchronisation, where the ops ran, which GPUs the backend sees, and versions.

Importing this module imports neither Keras nor any framework: the frontend
uses BACKENDS to validate sweeps.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Callable

PRECISIONS = {"fp32": "float32", "mixed_float16": "mixed_float16", "mixed_bfloat16": "mixed_bfloat16"}


@dataclass(frozen=True)
class Backend:
    name: str  # Keras' name, the value of KERAS_BACKEND
    title: str  # for people
    module: str  # what must be importable
    packages: tuple  # distributions that provide it, for versions
    executions: tuple  # the first is the default
    precisions: tuple
    install: str  # the command that installs it, for error messages
    explain: dict  # execution -> what it means on this backend

    @property
    def default_execution(self) -> str:
        return self.executions[0]


BACKENDS = {
    "tensorflow": Backend(
        "tensorflow", "TensorFlow", "tensorflow", ("tensorflow", "tensorflow-cpu"), ("graph", "xla", "eager"),
        tuple(PRECISIONS),
        "pip install -e '.[cpu]' (or '.[gpu]' on a CUDA node; `make install` picks)",
        {"graph": "tf.function", "xla": "tf.function(jit_compile=True)", "eager": "op by op"}),
    "jax": Backend(
        "jax", "JAX", "jax", ("jax",), ("graph", "eager"), tuple(PRECISIONS),
        "pip install -e '.[jax]' (or '.[jax-gpu]' on a CUDA node; `make install` picks)",
        {"graph": "jax.jit of a stateless step (XLA)", "eager": "the same stateless step, not jitted"}),
    "torch": Backend(
        "torch", "PyTorch", "torch", ("torch",), ("eager", "compile"), tuple(PRECISIONS),
        "pip install -e '.[torch]' with the CPU index (or '.[torch-gpu]' on a CUDA node; `make install` picks)",
        {"eager": "eager PyTorch", "compile": "torch.compile (inductor) of the whole step"}),
}
EXECUTIONS = tuple(dict.fromkeys(e for b in BACKENDS.values() for e in b.executions))
DEFAULT_BACKEND = "tensorflow"


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}") from None


def is_installed(name: str) -> bool:
    """Importable here, checked without importing it (the frontend stays light)."""
    return importlib.util.find_spec(get_backend(name).module) is not None


def check_execution(backend: str, execution: str, precision: str | None = None) -> list:
    """Problems with running `execution` and `precision` on `backend` (empty when fine)."""
    b = get_backend(backend)
    problems = []
    if execution not in b.executions:
        owners = [n for n, o in BACKENDS.items() if execution in o.executions]
        whose = f"{execution!r} is {' and '.join(owners)}'s" if owners else f"unknown execution {execution!r}"
        problems.append(("execution", f"{whose}: {backend} runs {', '.join(b.executions)}"))
    if precision is not None and precision not in b.precisions:
        problems.append(("precision", f"{backend} cannot run {precision!r}; it runs {', '.join(b.precisions)}"))
    return problems


def select_backend(name: str) -> None:
    """Make Keras use `name`: call before anything imports keras (the choice is made at import).

    Fails loudly if Keras is already loaded with another backend: a job must never measure a
    different framework than its cell names.
    """
    get_backend(name)
    if "keras" in sys.modules:
        import keras

        current = keras.backend.backend()
        if current != name:
            raise RuntimeError(f"Keras was imported with the {current} backend before the cell could select "
                               f"{name}: select_backend must run before any keras import")
        return
    os.environ["KERAS_BACKEND"] = name
    if name == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from jobs.tf_startup import import_tensorflow

        import_tensorflow()  # the first import, here for every caller (job, catalog): no C++ start-up lines


def current() -> str:
    import keras

    return keras.backend.backend()


def set_precision(precision: str) -> None:
    """Keras' global dtype policy, on every backend; call before building the model."""
    import keras

    keras.mixed_precision.set_global_policy(PRECISIONS[precision])


def to_device(array):
    """A host array as a tensor of the current backend, on its default device (the GPU if any)."""
    from keras import ops

    return ops.convert_to_tensor(array)


# --- the steps ------------------------------------------------------------------

class Step:
    """One iteration on the fixed batch; call it, then `sync()` before reading a clock.

    `run` returns the step's output (logits or loss). `sync` waits until the device has
    finished everything queued so far, this step's update included.
    """

    def __init__(self, run: Callable[[], object], sync: Callable[[], None], backend: str, execution: str):
        self._run, self._sync = run, sync
        self.backend, self.execution = backend, execution
        self.last = None

    def __call__(self):
        self.last = self._run()
        return self.last

    def sync(self) -> None:
        self._sync()


def sum_squared_error(output, target):
    """The original loss, `2 * tf.nn.l2_loss(output - target)`, in float32."""
    from keras import ops

    return ops.sum(ops.square(ops.cast(output, "float32") - ops.cast(target, "float32")))


def _optimizer(learning_rate: float):
    import keras

    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)  # dynamic loss scaling
    return optimizer


def _live_variables(model) -> list:
    """Trainable variables on the loss path: not the Inception aux heads (dead code in the
    original, where TF1's minimize() gave them no gradient, no update and no Adam slots)."""
    aux = getattr(model, "aux_logits", None)
    dead = {id(v) for v in aux.trainable_variables} if aux is not None else set()
    return [v for v in model.trainable_variables if id(v) not in dead]


def make_step(model, phase: str, x, y, execution: str | None = None, learning_rate: float = 1e-4) -> Step:
    """The inference or training step of the current backend, in the given execution mode."""
    backend = current()
    execution = execution or BACKENDS[backend].default_execution
    problems = check_execution(backend, execution)
    if problems:
        raise ValueError(problems[0][1])
    if phase not in ("inference", "training"):
        raise ValueError(f"unknown phase {phase!r}")
    builder = {"tensorflow": _tensorflow_step, "jax": _jax_step, "torch": _torch_step}[backend]
    return builder(model, phase, x, y, execution, learning_rate)


def _tensorflow_step(model, phase, x, y, execution, learning_rate) -> Step:
    import tensorflow as tf

    if phase == "inference":
        def run():
            return model(x, training=False)
    else:
        optimizer = _optimizer(learning_rate)
        variables = _live_variables(model)
        optimizer.build(variables)

        def run():
            with tf.GradientTape() as tape:
                loss = sum_squared_error(model(x, training=False), y)
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, variables)
            # Any other variable off the loss path gets no gradient and no update.
            pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
            optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            return loss
    if execution != "eager":
        run = tf.function(run, jit_compile=(execution == "xla"))
    return Step(run, tf.test.experimental.sync_devices, "tensorflow", execution)


def _jax_step(model, phase, x, y, execution, learning_rate) -> Step:
    """A stateless step (model.stateless_call, optimizer.stateless_apply) over explicit state.

    The state lives outside the model during the window, as in Keras' own JAX trainer; it is
    written back to the model's variables by `step.write_back()` (not needed for timing).
    """
    import jax
    from keras import StatelessScope

    live = _live_variables(model)
    live_ids = {id(v) for v in live}
    trainable = model.trainable_variables
    dead = [v for v in trainable if id(v) not in live_ids]
    order = [(id(v) in live_ids) for v in trainable]

    def merge(live_values, dead_values):
        it_live, it_dead = iter(live_values), iter(dead_values)
        return [next(it_live) if is_live else next(it_dead) for is_live in order]

    if phase == "inference":
        def fn(state, x, y):
            live_values, dead_values, non_trainable = state
            out, non_trainable = model.stateless_call(merge(live_values, dead_values), non_trainable, x,
                                                      training=False)
            return out, (live_values, dead_values, non_trainable)

        state = ([v.value for v in live], [v.value for v in dead], [v.value for v in model.non_trainable_variables])
    else:
        optimizer = _optimizer(learning_rate)
        optimizer.build(live)

        def loss_fn(live_values, dead_values, non_trainable, optimizer_values, x, y):
            out, non_trainable = model.stateless_call(merge(live_values, dead_values), non_trainable, x,
                                                      training=False)
            loss = sum_squared_error(out, y)
            with StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_values))):
                scaled = optimizer.scale_loss(loss)
            return scaled, (loss, non_trainable)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def fn(state, x, y):
            live_values, dead_values, non_trainable, optimizer_values = state
            (_, (loss, non_trainable)), grads = grad_fn(live_values, dead_values, non_trainable, optimizer_values,
                                                        x, y)
            live_values, optimizer_values = optimizer.stateless_apply(optimizer_values, grads, live_values)
            return loss, (live_values, dead_values, non_trainable, optimizer_values)

        state = ([v.value for v in live], [v.value for v in dead], [v.value for v in model.non_trainable_variables],
                 [v.value for v in optimizer.variables])
    if execution == "graph":
        # The state is updated in place, as a variable would be; donated buffers are freed, so the
        # step works on its own copy and the model's variables stay usable.
        fn = jax.jit(fn, donate_argnums=0)
        state = jax.tree_util.tree_map(lambda a: a.copy(), state)
    holder = {"state": state}

    def run():  # the batch is an argument, never a closed-over constant: a sharded multi-process array must be
        out, holder["state"] = fn(holder["state"], x, y)
        return out

    def sync():
        jax.block_until_ready(holder["state"])  # the whole new state: the update has finished

    step = Step(run, sync, "jax", execution)
    step.write_back = lambda: _jax_write_back(model, live, dead, holder["state"])
    return step


def _jax_write_back(model, live, dead, state):
    for v, value in zip(live, state[0]):
        v.assign(value)
    for v, value in zip(dead, state[1]):
        v.assign(value)
    for v, value in zip(model.non_trainable_variables, state[2]):
        v.assign(value)


def _torch_step(model, phase, x, y, execution, learning_rate) -> Step:
    import torch

    if phase == "inference":
        def run():
            with torch.no_grad():  # as Keras' predict_on_batch: no autograd graph for a forward pass
                return model(x, training=False)
    else:
        optimizer = _optimizer(learning_rate)
        variables = _live_variables(model)
        optimizer.build(variables)

        def run():
            for v in variables:
                v.value.grad = None
            loss = sum_squared_error(model(x, training=False), y)
            optimizer.scale_loss(loss).backward()
            pairs = [(v.value.grad, v) for v in variables if v.value.grad is not None]
            with torch.no_grad():
                optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            return loss.detach()
    if execution == "compile":
        run = torch.compile(run)

    def sync():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    return Step(run, sync, "torch", execution)


# --- where things ran, what the backend sees, versions ---------------------------

def placement(tensor) -> str | None:
    """The device a step's output lives on, as the backend names it."""
    if tensor is None:
        return None
    device = getattr(tensor, "device", None)  # TensorFlow: a string; torch: torch.device
    if callable(getattr(tensor, "devices", None)):  # JAX arrays
        devices = sorted(str(d) for d in tensor.devices())
        return ",".join(devices)
    return None if device is None else str(device)


def gpus_seen() -> list:
    """The GPUs the current backend can use, by its own names."""
    backend = current()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        try:
            return [str(d) for d in jax.devices("gpu")]
        except RuntimeError:  # no GPU platform in this jaxlib, or no device
            return []
    import torch

    return [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]


def placement_on_gpu(device: str | None) -> bool:
    return device is not None and any(k in device.lower() for k in ("gpu", "cuda"))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def software_record() -> dict:
    """The backend, its version and build (CUDA or CPU), for the result."""
    backend = current()
    record = {"backend": backend}
    if backend == "tensorflow":
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        record.update(backend_version=tf.__version__,
                      backend_package=next((p for p in BACKENDS["tensorflow"].packages if _version(p)), None),
                      cuda_build=build.get("cuda_version"), cudnn_build=build.get("cudnn_version"))
    elif backend == "jax":
        import jax
        import jaxlib

        record.update(backend_version=jax.__version__, backend_package="jax", jaxlib=jaxlib.__version__,
                      jax_platform=jax.default_backend(), cuda_build=None, cudnn_build=None)
    else:
        import torch

        record.update(backend_version=torch.__version__, backend_package="torch",
                      cuda_build=torch.version.cuda,
                      cudnn_build=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    return record


def seed_everything(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)  # Python, NumPy and the backend's own generator


def to_host(tensor):
    """A backend tensor as a NumPy array (copies from the device)."""
    from keras import ops

    return ops.convert_to_numpy(tensor)
