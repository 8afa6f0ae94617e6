"""Placement: values that live on the server versus values that live on every client.

This is the whole vocabulary the federated core needs (the idea of DrJAX, written small):

* a *server* value is an ordinary pytree;
* a *clients* value is a pytree whose every leaf has a leading client axis ``C``;
* :func:`broadcast` turns a server value into a clients value, :func:`map_clients` runs a
  per-client function on every client at once, and the ``reduce_*`` functions turn a clients
  value back into a server value.

All functions are pure and jit-friendly. When a :class:`jax.sharding.Mesh` with a ``"clients"``
axis is given, clients values are constrained to ``P("clients", ...)`` so XLA spreads the clients
over every device (and host) and lowers the reductions to one all-reduce; without a mesh the same
code is plain ``vmap``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any
CLIENTS_AXIS = "clients"


def num_clients(tree_C: PyTree) -> int:
    """The size of the leading client axis of a clients value."""
    leaves = jax.tree.leaves(tree_C)
    if not leaves:
        raise ValueError("num_clients: the clients value has no leaves")
    return leaves[0].shape[0]


def constrain_clients(tree_C: PyTree, mesh: Mesh | None) -> PyTree:
    """Pin the leading axis of every leaf to the mesh's ``clients`` axis (no-op without a mesh)."""
    if mesh is None or CLIENTS_AXIS not in mesh.axis_names:
        return tree_C
    sharding = NamedSharding(mesh, P(CLIENTS_AXIS))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree_C)


def broadcast(tree: PyTree, num: int, mesh: Mesh | None = None) -> PyTree:
    """Copy a server value to ``num`` clients (prefer ``in_axes=None`` in :func:`map_clients`)."""
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (num,) + jnp.shape(x)), tree)
    return constrain_clients(stacked, mesh)


def map_clients(
    fn: Callable[..., PyTree],
    in_axes: Sequence[int | None],
    *,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
) -> Callable[..., PyTree]:
    """Run ``fn`` (written for ONE client) on every client.

    Args:
      fn: the per-client function.
      in_axes: per positional argument, ``0`` for a clients value or ``None`` for a server value
        shared by all clients (it is passed as is: never stacked, never copied).
      mesh: optional mesh; clients values are sharded over its ``clients`` axis.
      chunk_size: if set, clients are processed ``chunk_size`` at a time (``lax.map`` with
        ``batch_size``), trading speed for memory when a whole cohort does not fit. With a mesh,
        each device chunks its own ``C / devices`` clients (C must divide over the ``clients``
        axis), so chunking never gathers the cohort onto one device.
    """
    in_axes = tuple(in_axes)
    spmd_axis = CLIENTS_AXIS if mesh is not None and CLIENTS_AXIS in mesh.axis_names else None

    def mapped(*args):
        if len(args) != len(in_axes):
            raise TypeError(f"map_clients: got {len(args)} arguments for {len(in_axes)} in_axes")
        args = tuple(constrain_clients(a, mesh) if ax == 0 else a for a, ax in zip(args, in_axes))
        if chunk_size is None:
            out = jax.vmap(fn, in_axes=in_axes, spmd_axis_name=spmd_axis)(*args)
        else:
            client_args = tuple(a for a, ax in zip(args, in_axes) if ax == 0)

            def one_client(client_values):
                it = iter(client_values)
                full = tuple(next(it) if ax == 0 else a for a, ax in zip(args, in_axes))
                return fn(*full)

            shards = mesh.shape[CLIENTS_AXIS] if spmd_axis is not None else 1
            if shards == 1:
                out = jax.lax.map(one_client, client_args, batch_size=chunk_size)
            else:
                # A plain lax.map would scan over the sharded client axis, so every device would
                # all-gather the whole cohort and run all of it. Instead split the axis into
                # [shards, C / shards] (device i holds rows i·C/shards.. of the P("clients") layout, so
                # the reshape moves no data), vmap over the shards and chunk each device's own clients.
                count = num_clients(client_args)
                if count % shards:
                    raise ValueError(
                        f"map_clients: a cohort of {count} clients does not divide over the "
                        f"mesh's {shards} '{CLIENTS_AXIS}' devices; pad the cohort to a "
                        f"multiple of {shards}"
                    )
                split = jax.tree.map(
                    lambda x: x.reshape((shards, count // shards) + x.shape[1:]), client_args
                )
                out = jax.vmap(
                    lambda part: jax.lax.map(one_client, part, batch_size=chunk_size),
                    spmd_axis_name=spmd_axis,
                )(split)
                out = jax.tree.map(lambda x: x.reshape((count,) + x.shape[2:]), out)
        return constrain_clients(out, mesh)

    return mapped


def reduce_sum(tree_C: PyTree) -> PyTree:
    """Sum a clients value over the client axis."""
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), tree_C)


def reduce_mean(tree_C: PyTree) -> PyTree:
    """Unweighted mean over the client axis."""
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), tree_C)


def reduce_weighted_mean(tree_C: PyTree, weights_C: jax.Array) -> PyTree:
    """``Σ_k w_k x_k / Σ_k w_k`` over the client axis (weights need not be normalised)."""
    w_C = weights_C / jnp.sum(weights_C)

    def reduce_leaf(x):
        w = w_C.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
        return jnp.sum(w * x, axis=0)

    return jax.tree.map(reduce_leaf, tree_C)
