"""Run on one backend, in its own process: forward (and one training step) of tiny models on shared weights.

`python -m tests.backend_probe BACKEND FOLDER [--train] NAME...`, or
`python -m tests.backend_probe BACKEND FOLDER --precision POLICY...`. The first backend to run a
model (the tests run TensorFlow first) builds it, seeded, and writes its weights and input
to FOLDER; later backends load those weights, so every backend computes on the same numbers.
Each run writes FOLDER/<name>.<backend>.npz: the forward output, and with --train the loss of
one training step and whether the first/last trainable variables and the aux head moved.
Keras fixes its backend at import, hence one process per backend.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# Per-sample inputs for the agreement checks: small, but big enough that every custom op
# (pyramid pooling and its resizes, pixel shuffle, skew) does real work.
INPUTS = {"mobilenet_v2": (32, 32, 3), "inception_v3": (75, 75, 3), "inception_v4": (75, 75, 3),
          "srgan": (16, 16, 3), "dped": (16, 16, 3), "unet": (16, 16, 3), "srcnn": (16, 16, 3),
          "pspnet": (64, 64, 3), "icnet": (64, 64, 3), "deeplab": (16, 16, 3), "spade": (128, 128, 3),
          "pixel_rnn": (4, 4, 3), "lstm": (4, 300)}


def _output_shape(test, sub, input_shape):
    if len(sub.input_shape) == 3 and len(sub.output_shape) == 3:
        return (*(i * o // s for i, o, s in zip(input_shape[:2], sub.output_shape[:2], sub.input_shape[:2])),
                sub.output_shape[2])
    return sub.output_shape


def _fix_latent(model, batch, dim):
    """SPADE draws z inside the model: give every backend the same z (the only random op)."""
    from keras import ops

    z = np.random.default_rng(1).standard_normal((batch, dim)).astype(np.float32)
    layer = model.get_layer("z")
    layer.call = lambda x: ops.convert_to_tensor(z)


def probe(backend: str, folder: Path, name: str, train: bool) -> None:
    from jobs import backends, workload
    from jobs.catalog import get_test

    test = get_test(name)
    input_shape = INPUTS[name]
    sub = test.subtests[0]
    backends.seed_everything(0)
    model = test.load_builder()(input_shape, _output_shape(test, sub, input_shape))
    shared = folder / f"{name}.shared.npz"
    if shared.exists():
        data = np.load(shared)
        model.set_weights([data[f"w{i}"] for i in range(len(model.weights))])
        x, y = data["x"], data["y"]
    else:
        x, y = workload.synthetic_arrays(test.task, 2, input_shape, tuple(model.output_shape[1:]), seed=3)
        np.savez(shared, x=x, y=y, **{f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())})
    if name == "spade":
        _fix_latent(model, 2, int(model.get_layer("z").dim))
    xt, yt = backends.to_device(x), backends.to_device(y)
    forward = backends.make_step(model, "inference", xt, yt)  # the job's own path, default execution
    result = forward()
    forward.sync()
    out = {"forward": np.asarray(backends.to_host(result)), "device": np.asarray(backends.placement(result)),
           "total_params": np.asarray(model.count_params()),
           "trainable_params": np.asarray(sum(int(np.prod(v.shape)) for v in model.trainable_weights))}
    if train:
        aux = getattr(model, "aux_logits", None)
        live = backends._live_variables(model)
        watched = [live[0], live[-1]]
        before = [np.asarray(v.numpy()).copy() for v in watched]
        aux_before = [] if aux is None else [np.asarray(v.numpy()).copy() for v in aux.weights]
        step = backends.make_step(model, "training", xt, yt)
        loss = step()
        step.sync()
        if hasattr(step, "write_back"):  # JAX: the stateless step's state back into the variables
            step.write_back()
        out["loss"] = np.asarray(float(backends.to_host(loss)))
        out["moved"] = np.asarray([not np.array_equal(b, np.asarray(v.numpy())) for b, v in zip(before, watched)])
        out["aux_still"] = np.asarray([np.array_equal(b, np.asarray(v.numpy()))
                                       for b, v in zip(aux_before, [] if aux is None else aux.weights)])
    np.savez(folder / f"{name}.{backend}.npz", **out)


def precision_probe(backend: str, folder: Path, precision: str) -> None:
    """One inference and one applied training step of SRCNN under a mixed precision policy."""
    import keras

    from jobs import backends, workload
    from jobs.catalog import get_test

    workload.set_precision(precision)
    test = get_test("srcnn")  # small: float16 is emulated, slowly, on CPUs
    model = test.load_builder()((16, 16, 3), (16, 16, 3))
    x, y = workload.synthetic_batch(test.task, 2, (16, 16, 3), (16, 16, 3))
    out = backends.make_step(model, "inference", x, y)()
    before = [np.asarray(v.numpy()).copy() for v in model.trainable_variables]
    step = backends.make_step(model, "training", x, y)
    applied = False
    for tries in range(1, 31):  # float16's dynamic loss scale skips steps (halving) until gradients fit
        loss = step()
        step.sync()
        if hasattr(step, "write_back"):
            step.write_back()
        if any((b != np.asarray(v.numpy())).any() for b, v in zip(before, model.trainable_variables)):
            applied = True
            break
    np.savez(folder / f"precision.{precision}.{backend}.npz", output_dtype=np.asarray(str(backends.to_host(out).dtype)),
             compute_dtypes=np.asarray(sorted({layer.compute_dtype for layer in model.layers if layer.weights})),
             loss=np.asarray(float(backends.to_host(loss))), applied=np.asarray(applied), tries=np.asarray(tries))
    keras.mixed_precision.set_global_policy("float32")


def main(argv: list) -> int:
    backend, folder, rest = argv[0], Path(argv[1]), argv[2:]
    from jobs import backends

    backends.select_backend(backend)
    if rest and rest[0] == "--precision":
        for precision in rest[1:]:
            precision_probe(backend, folder, precision)
        print(json.dumps({"backend": backend, "precisions": rest[1:]}))
        return 0
    train = "--train" in rest
    names = [n for n in rest if n != "--train"]
    for name in names:
        probe(backend, folder, name, train)
        import keras

        keras.backend.clear_session()
    print(json.dumps({"backend": backend, "done": names}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
