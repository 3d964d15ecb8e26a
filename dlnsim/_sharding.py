"""Batches sharded over every device of every process, on JAX's own engine.

A sweep's elements are independent, so a batch is laid out along one mesh axis, ``"batch"``,
spanning all devices (``jax.devices()``: every local device and, after
:func:`initialize_distributed`, those of the other processes). Every process builds the same
global batch from the same grid; :func:`shard_batch` hands each device its slice, a jitted
``vmap`` runs each slice where it lives, and :func:`gather` brings the rows back to every process
(``multihost_utils.process_allgather``). No scheduler of our own: XLA's SPMD partitioner splits
the program, and with no cross-element operation the devices never wait on each other.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def initialize_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Joins this process to a multi-process JAX run (``jax.distributed.initialize``).

    Arguments left ``None`` come from ``jax.distributed``'s own detection (cluster environments)
    or from the environment variables ``DLNSIM_COORDINATOR`` (host:port), ``DLNSIM_NUM_PROCESSES``
    and ``DLNSIM_PROCESS_ID``. On the CPU backend, cross-process collectives use gloo. Call it
    before any other JAX computation.
    """
    env = os.environ
    coordinator = coordinator or env.get("DLNSIM_COORDINATOR")
    if num_processes is None and "DLNSIM_NUM_PROCESSES" in env:
        num_processes = int(env["DLNSIM_NUM_PROCESSES"])
    if process_id is None and "DLNSIM_PROCESS_ID" in env:
        process_id = int(env["DLNSIM_PROCESS_ID"])
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"the number of processes must be >= 1, got {num_processes}")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"the process id must be in [0, {num_processes}), got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )


def batch_mesh(devices=None) -> Mesh:
    """A one-axis mesh (``"batch"``) over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def padded_size(n: int, mesh: Mesh, multiple: int = 1) -> int:
    """The smallest size >= n that the mesh's devices divide evenly (and ``multiple`` divides)."""
    step = int(np.lcm(mesh.size, multiple))
    return max(step, -(-n // step) * step)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading axis over the mesh's batch axis, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXIS, *([None] * (ndim - 1))))


def shard_batch(tree, mesh: Mesh):
    """Places a pytree of host arrays, each with the batch as its leading axis (a multiple of the
    mesh size), as global arrays sharded along that axis. Every process passes the same values;
    each one provides only the slices its own devices hold."""

    def place(x):
        x = np.asarray(x)
        if x.shape[0] % mesh.size:
            raise ValueError(f"a batch of {x.shape[0]} does not split over {mesh.size} devices; pad it")
        return jax.make_array_from_callback(x.shape, batch_sharding(mesh, x.ndim), lambda idx: x[idx])

    return jax.tree.map(place, tree)


def gather(tree):
    """Host (numpy) copies of a pytree of global arrays, on every process."""
    if jax.process_count() > 1:
        return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)
    return jax.tree.map(np.asarray, tree)


def is_writer() -> bool:
    """Whether this process writes shared outputs (process 0 of a multi-process run)."""
    return jax.process_index() == 0
