"""Data parallel for one cell: over the devices of a node and over several workers (nodes).

- TensorFlow: `tf.distribute.MirroredStrategy` on one node (GPUs, or logical CPU devices on a
  CPU node: the test machine's case), `MultiWorkerMirroredStrategy` over several workers
  (TF_CONFIG from the worker record the launcher wrote).
- JAX: `keras.distribution.DataParallel` over the node's devices (XLA host devices on a CPU node);
  several processes join through `jax.distributed.initialize` (gloo collectives on CPU nodes).
- PyTorch: refused at validation: Keras 3 has no data-parallel distribution for it.

The training step is the single-device step's (same loss, same optimizer, BatchNorm frozen),
per replica on its shard of the global batch; Keras' optimizer sums the gradients over all
replicas, so one step is the same update as on the whole global batch. The window opens and
closes on `barrier()`, a collective over every worker, so every node meters the same interval.

A worker's cell.json carries `worker`: {index, count, addresses (host:port, one per worker),
coordinator, host, local_rank, meters}: jobs/workers.py writes it and runs the workers.
Imports nothing from orchestrator/.
"""
from __future__ import annotations

import json
import os
from contextlib import nullcontext

WORKER_KEY = "worker"


# --- what the sweep may ask (used by orchestrator/scale.py at validation) ---------------------------

def strategy_name(backend: str, devices: int, nodes: int) -> str:
    if backend == "tensorflow":
        return "tf.distribute.MultiWorkerMirroredStrategy" if nodes > 1 else "tf.distribute.MirroredStrategy"
    if backend == "jax":
        return "keras.distribution.DataParallel" + (" + jax.distributed" if nodes > 1 else "")
    return "none"


def refusal(backend: str, devices: int, nodes: int, has_gpus: bool) -> str | None:
    """Why this backend cannot run this scale here, or None."""
    if backend == "torch":
        return ("Keras 3 has no data-parallel distribution for the PyTorch backend (keras.distribution is JAX "
                "only, tf.distribute TensorFlow only): use tensorflow or jax for scaled cells")
    if backend == "tensorflow" and nodes > 1 and devices > 1 and not has_gpus:
        return ("MultiWorkerMirroredStrategy uses one CPU device per worker: on a CPU node type use "
                "devices_per_node: 1 with several nodes")
    if backend == "jax" and nodes > 1 and devices > 1 and not has_gpus:
        return ("JAX multi-process on CPU uses one CPU device per process (gloo collectives): on a CPU node "
                "type use devices_per_node: 1 with several nodes")
    return None


# --- in the job ------------------------------------------------------------------------------------

def prepare(params: dict, worker: dict | None) -> None:
    """Environment the frameworks read at import or start-up: before anything imports Keras."""
    if "devices_per_node" not in params:
        return
    backend = params.get("backend", "tensorflow")
    if backend == "jax" and params["devices_per_node"] > 1:
        # On a CPU node, JAX shows one device unless told to split the host (ignored on GPUs).
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={params['devices_per_node']}"
    if backend == "tensorflow" and worker and worker["count"] > 1:
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": worker["addresses"]},
                                              "task": {"type": "worker", "index": worker["index"]}})


def setup(cell: dict):
    """The cell's data-parallel runtime, or None for an unscaled cell. After the backend is selected."""
    params = cell["params"]
    if "devices_per_node" not in params:
        return None
    worker = cell.get(WORKER_KEY) or {"index": 0, "count": 1, "addresses": [], "coordinator": None}
    has_gpus = bool(cell.get("node", {}).get("gpu_count"))
    backend = params.get("backend", "tensorflow")
    if backend == "tensorflow":
        return _TensorFlow(params, worker, has_gpus)
    if backend == "jax":
        return _Jax(params, worker, has_gpus)
    raise RuntimeError(refusal(backend, params["devices_per_node"], params["nodes"], has_gpus))


def scope(parallel):
    """Where the model and optimizer are built: the strategy's scope, or nothing for an unscaled cell."""
    return nullcontext() if parallel is None else parallel.scope()


def _shard(array, index: int, count: int):
    size = array.shape[0] // count
    return array[index * size:(index + 1) * size]


class _TensorFlow:
    def __init__(self, params: dict, worker: dict, has_gpus: bool):
        import tensorflow as tf

        self.tf, self.worker, self.params = tf, worker, params
        devices = params["devices_per_node"]
        if worker["count"] > 1:
            # TF_CONFIG was set by prepare(); created first, before any other op, as TF requires.
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            if has_gpus:
                names = [f"/gpu:{i}" for i in range(devices)]
            else:
                cpu = tf.config.list_physical_devices("CPU")[0]
                if devices > 1:  # one CPU split into logical devices: real replicas, real all-reduce
                    tf.config.set_logical_device_configuration(
                        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])
                names = [f"/cpu:{i}" for i in range(devices)]
            self.strategy = tf.distribute.MirroredStrategy(names)
        self.replicas = self.strategy.num_replicas_in_sync
        expected = devices * worker["count"]
        if self.replicas != expected:
            raise RuntimeError(f"{self.replicas} replicas in sync, expected {expected} "
                               f"({devices} device(s) x {worker['count']} worker(s))")

        @tf.function
        def _barrier():
            one = self.strategy.run(lambda: tf.constant(1.0))
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, one, axis=None)

        self._barrier = _barrier

    def scope(self):
        return self.strategy.scope()

    def barrier(self) -> None:
        """A collective over every replica of every worker: returns once all have reached it."""
        seen = float(self._barrier())
        if round(seen) != self.replicas:
            raise RuntimeError(f"barrier saw {seen:g} replicas, expected {self.replicas}")

    def make_step(self, model, phase: str, x, y, execution: str, learning_rate: float = 1e-4):
        import numpy as np

        from jobs import backends

        tf, strategy = self.tf, self.strategy
        x, y = np.asarray(x), np.asarray(y)
        replicas = self.replicas

        def values(array):  # each replica (global index) gets its slice of the global batch
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.constant(_shard(array, ctx.replica_id_in_sync_group, replicas)))

        dx, dy = values(x), values(y)
        if phase == "inference":
            def replica_step(xs, ys):
                return model(xs, training=False)
        else:
            with strategy.scope():
                optimizer = backends._optimizer(learning_rate)
                variables = backends._live_variables(model)
                optimizer.build(variables)

            def replica_step(xs, ys):  # the single-device step of jobs/backends.py, on one shard
                with tf.GradientTape() as tape:
                    loss = backends.sum_squared_error(model(xs, training=False), ys)
                    scaled = optimizer.scale_loss(loss)
                grads = tape.gradient(scaled, variables)
                pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
                optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])  # sums gradients over replicas
                return loss

        def run():
            out = strategy.run(replica_step, args=(dx, dy))
            return strategy.experimental_local_results(out)[0]

        if execution != "eager":
            run = tf.function(run, jit_compile=(execution == "xla"))
        if self.worker["count"] == 1:
            return backends.Step(run, tf.test.experimental.sync_devices, "tensorflow", execution)
        last = {}

        def step():
            last["out"] = run()
            return last["out"]

        def sync():  # sync_devices needs a single-client context: fetching the step's output waits for it instead
            if "out" in last:
                last["out"].numpy()

        return backends.Step(step, sync, "tensorflow", execution)

    def record(self) -> dict:
        return {"strategy": type(self.strategy).__name__, "replicas_in_sync": self.replicas,
                "devices": list(self.strategy.extended.worker_devices),
                "worker_index": self.worker["index"], "workers": self.worker["count"],
                "batch_scaling": self.params["batch_scaling"], "per_device_batch": self.params["per_device_batch"],
                "global_batch": self.params["batch_size"]}


class _Jax:
    def __init__(self, params: dict, worker: dict, has_gpus: bool):
        import jax
        import keras

        self.jax, self.worker, self.params = jax, worker, params
        if worker["count"] > 1:
            if not has_gpus:  # CPU processes all-reduce through gloo (GPUs through NCCL, the default)
                jax.config.update("jax_cpu_collectives_implementation", "gloo")
            jax.distributed.initialize(coordinator_address=worker["coordinator"], num_processes=worker["count"],
                                       process_id=worker["index"])
        devices = params["devices_per_node"]
        local = jax.local_devices()[:devices]
        if len(local) < devices:
            raise RuntimeError(f"JAX sees {len(jax.local_devices())} local device(s), the cell asks for {devices}")
        chosen = [d for d in jax.devices() if d.process_index != jax.process_index()] + local
        self.distribution = keras.distribution.DataParallel(devices=sorted(chosen, key=lambda d: d.id))
        keras.distribution.set_distribution(self.distribution)  # variables created from now on: replicated
        self.replicas = len(chosen)

    def scope(self):
        return self.distribution.scope()

    def barrier(self) -> None:
        if self.worker["count"] > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("benchmark-tracker window")

    def make_step(self, model, phase: str, x, y, execution: str, learning_rate: float = 1e-4):
        import numpy as np

        from jobs import backends

        def place(array):  # the global batch split along its first axis over the mesh
            array = np.asarray(array)
            layout = self.distribution.get_data_layout(array.shape)
            if self.worker["count"] > 1:
                local = _shard(array, self.worker["index"], self.worker["count"])
                from keras.src.backend.jax.distribution_lib import distribute_data_input

                return distribute_data_input(local, layout, self.distribution.batch_dim_name)
            import keras

            return keras.distribution.distribute_tensor(array, layout)

        # jax.jit partitions the single-device step over the sharded batch (all-reduce of the gradients).
        return backends.make_step(model, phase, place(x), place(y), execution, learning_rate)

    def record(self) -> dict:
        return {"strategy": "keras.distribution.DataParallel", "replicas_in_sync": self.replicas,
                "devices": [str(d) for d in self.distribution.device_mesh.devices.flatten()],
                "worker_index": self.worker["index"], "workers": self.worker["count"],
                "batch_scaling": self.params["batch_scaling"], "per_device_batch": self.params["per_device_batch"],
                "global_batch": self.params["batch_size"]}
