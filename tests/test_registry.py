"""ClientRegistry: N clients, the cohort gathered per round and scattered back.

The headline check: 10,000 registered clients, 100 sampled per round, 3 rounds of FedDAT on the
toy model, with ONE compilation (no backend compile at all after the first round), holding private
state only for the clients that trained.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy_model as toy
from one_federation import make_round_fn, with_replica_axis

from feddat_jax.fl import local_optim, sampling
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.algorithms import FedDAT, FedDATConfig
from feddat_jax.fl.registry import ClientRegistry, chunk_size_for, pad_batches, pad_ids
from feddat_jax.fl.replicas import make_replica_round_fn
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import ClientTasks, gather, init_server_state

A, B, S = 5, 4, 2
OPTIM = local_optim.LocalOptimConfig(learning_rate=3e-2, schedule_epochs=2.0)


class CompileCounter:
    """Counts XLA backend compilations (every jit cache miss ends in one) while started."""

    def __init__(self):
        self.events = []

    def _listener(self, event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            self.events.append(duration)

    def start(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)

    def stop(self):
        jax.monitoring.unregister_event_duration_listener(self._listener)


def private_of(registry, ids):
    """Host copies of these clients' private state ``[R, C, ...]`` (the initial state for a
    client that never trained)."""
    return jax.device_get(registry.gather(np.broadcast_to(ids, (registry.replicas, len(ids))))[0])


def dense(registry, n):
    return private_of(registry, np.arange(n))


def client_sizes(n):
    return 1 + (np.arange(n) * 7919) % (S * B)  # 1..8 examples: at most S steps of B


def tasks_for(n) -> ClientTasks:
    k = np.arange(n)
    real = 2 + k % (A - 1)
    mask = (np.arange(A)[None, :] < real[:, None]).astype(np.float32)
    return ClientTasks(
        answer_mask=mask,
        task_kind=(k % 2).astype(np.int32),
        num_examples=client_sizes(n).astype(np.int32),
    )


def cohort_batches(ids, tasks: ClientTasks):
    """Each client's data is a pure function of its id (as a data store would give it)."""
    per = []
    for k in ids:
        ex = toy.client_examples(
            np.random.default_rng([3, int(k)]),
            int(tasks.num_examples[k]),
            A,
            int(tasks.task_kind[k]),
            int(tasks.answer_mask[k].sum()),
        )
        per.append(toy.batch_epoch(ex, B, S))
    return {key: np.stack([p[key] for p in per]) for key in per[0]}


def setup(traces=None):
    def forward(params, batch, mode):
        if traces is not None:
            traces.append(mode)
        return toy.forward(params, batch, mode)

    algorithm = FedDAT(forward, FedDATConfig(optim=OPTIM))
    frozen, shared, private = toy.split(toy.init_params(jax.random.key(0), A))
    return algorithm, frozen, shared, private


def max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def test_10k_clients_100_per_round_three_rounds_one_compile():
    n, c = 10_000, 100
    traces = []
    algorithm, frozen, shared, private = setup(traces)
    tasks = tasks_for(n)
    registry = ClientRegistry.create(algorithm, shared, private, tasks)
    assert registry.num_clients == n and registry.storage == "host"
    initial = dense(registry, n)
    tx = make_server_optimizer("fedavg")
    server = with_replica_axis(init_server_state(shared, tx, jax.random.key(1)))
    run = make_replica_round_fn(algorithm, tx, MeanAggregator())
    frozen = jax.device_put(frozen)

    seen = []
    first, counter = CompileCounter(), CompileCounter()
    first.start()
    for r in range(3):
        ids = sampling.sample_clients(seed=0, round_index=r, num_registered=n, clients_per_round=c)
        batches = cohort_batches(ids, tasks)
        if r == 1:
            first.stop()
            counter.start()
        server, metrics = registry.run_round(
            run, frozen, server, ids[None], with_replica_axis(batches)
        )
        np.testing.assert_array_equal(
            np.asarray(metrics["clients"]["steps"])[0], -(-tasks.num_examples[ids] // B)
        )
        seen.append(ids)
    counter.stop()

    assert int(server.round[0]) == 3
    assert len(traces) == 3, f"FedDAT traced {len(traces)} forward passes (3 = one trace)"
    assert run._cache_size() <= 1
    assert len(first.events) >= 1  # the listener sees compilations: round 1 compiled the round
    assert counter.events == [], f"{len(counter.events)} compilations in rounds 2-3"
    trained = np.unique(np.concatenate(seen))
    untouched = np.setdiff1d(np.arange(n), trained)
    head = lambda tree: tree["params"]["head"]["kernel"][0]
    now = dense(registry, n)
    assert np.all(np.abs(head(now)[trained] - head(initial)[trained]).max((1, 2)) > 0)
    np.testing.assert_array_equal(head(now)[untouched], head(initial)[untouched])
    ids, _ = registry.trained()
    np.testing.assert_array_equal(ids[0], trained)  # state only for the clients that trained
    assert registry.used[0] == trained.size < 300
    per_client = sum(x.nbytes for x in jax.tree.leaves(private_of(registry, [0])))
    slot_bytes = registry.nbytes - sum(x.nbytes for x in jax.tree.leaves(registry.tasks))
    assert slot_bytes < per_client * (trained.size + 2) + registry.slot_of.nbytes


def test_registry_round_equals_direct_round_host_and_device():
    n = 12
    algorithm, frozen, shared, private = setup()
    tasks = tasks_for(n)
    tx = make_server_optimizer("fedadam", learning_rate=0.1)
    server0 = init_server_state(shared, tx, jax.random.key(1))
    run = make_round_fn(algorithm, tx, MeanAggregator())
    run_R = make_replica_round_fn(algorithm, tx, MeanAggregator())
    host = ClientRegistry.create(algorithm, shared, private, tasks)
    device = ClientRegistry.create(algorithm, shared, private, tasks, storage="device")
    reference = jax.tree.map(lambda x: x[0], dense(host, n))

    s_ref = server0
    s_host = s_dev = with_replica_axis(server0)
    counter = CompileCounter()
    for r, ids in enumerate((np.array([0, 3, 4, 7, 11]), np.array([1, 3, 5, 7, 8]))):
        batches = cohort_batches(ids, tasks)
        s_ref, private_C, _ = run(
            frozen,
            s_ref,
            jax.tree.map(jnp.asarray, gather(reference, ids)),
            gather(tasks, ids),
            jnp.asarray(ids, jnp.int32),
            batches,
        )
        reference = jax.tree.map(lambda x, v: _set_rows(x, ids, v), reference, private_C)
        batches_R = with_replica_axis(batches)
        s_host, _ = host.run_round(run_R, frozen, s_host, ids[None], batches_R)
        if r == 1:
            counter.start()
        s_dev, _ = device.run_round(run_R, frozen, s_dev, ids[None], batches_R)
    counter.stop()
    assert counter.events == [], "device-storage gather/scatter recompiled in round 2"
    assert max_diff(s_host.shared, with_replica_axis(s_ref.shared)) <= 1e-6
    assert max_diff(s_dev.shared, with_replica_axis(s_ref.shared)) <= 1e-6
    assert max_diff(dense(host, n), with_replica_axis(reference)) <= 1e-6
    assert max_diff(dense(device, n), with_replica_axis(reference)) <= 1e-6
    assert max_diff(device.trained(), host.trained()) <= 1e-6


def _set_rows(x, ids, v):
    x = np.array(x)
    x[ids] = np.asarray(v)
    return x


def test_padded_cohort_trains_the_same_as_unpadded():
    n = 10
    algorithm, frozen, shared, private = setup()
    tasks = tasks_for(n)
    tx = make_server_optimizer("fedavg")
    server = with_replica_axis(init_server_state(shared, tx, jax.random.key(1)))
    run = make_replica_round_fn(algorithm, tx, MeanAggregator("weighted"))
    ids = np.array([2, 5, 6, 9, 1])
    a = ClientRegistry.create(algorithm, shared, private, tasks)
    b = ClientRegistry.create(algorithm, shared, private, tasks)
    sa, _ = a.run_round(
        run, frozen, server, ids[None], with_replica_axis(cohort_batches(ids, tasks))
    )
    pids, mask = pad_ids(ids, 4)
    np.testing.assert_array_equal(pids, [2, 5, 6, 9, 1, 2, 2, 2])
    np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 0, 0, 0])
    padded = pad_batches(cohort_batches(ids, tasks), len(pids))
    assert padded["example_mask"][5:].sum() == 0
    _, tasks_C = b.gather(pids[None], mask[None])
    np.testing.assert_array_equal(np.asarray(tasks_C.num_examples)[0, 5:], 0)
    sb, _ = b.run_round(
        run, frozen, server, pids[None], with_replica_axis(padded), mask[None]
    )
    assert max_diff(sa.shared, sb.shared) <= 1e-6
    assert max_diff(dense(a, n), dense(b, n)) <= 1e-6  # padded slots (all client 2) dropped
    assert a.used[0] == b.used[0] == len(ids)


def test_owned_subset_and_errors():
    algorithm, _, shared, private = setup()
    owned = np.array([3, 4, 5, 6])
    tasks = tasks_for(10)
    reg = ClientRegistry.create(algorithm, shared, private, gather(tasks, owned), client_ids=owned)
    np.testing.assert_array_equal(reg.rows([3, 6, 5]), [0, 3, 2])
    with pytest.raises(KeyError, match="not held"):
        reg.rows([2])
    sparse = ClientRegistry.create(
        algorithm, shared, private, gather(tasks, [1, 5, 9]), client_ids=[1, 5, 9]
    )
    np.testing.assert_array_equal(sparse.rows([9, 1]), [2, 0])
    with pytest.raises(KeyError):
        sparse.rows([4])
    with pytest.raises(ValueError, match="sorted unique"):
        ClientRegistry.create(
            algorithm, shared, private, gather(tasks, owned), client_ids=[4, 3, 5, 6]
        )
    with pytest.raises(ValueError, match="storage"):
        ClientRegistry.create(algorithm, shared, private, tasks, storage="disk")
    bad = tasks.replace(num_examples=np.zeros(10, np.int32))
    with pytest.raises(ValueError, match="zero training examples"):
        ClientRegistry.create(algorithm, shared, private, bad)


def test_chunk_size_for():
    assert chunk_size_for(64, None, None) is None
    assert chunk_size_for(64, None, 64) is None
    assert chunk_size_for(64, None, 16) == 16


@pytest.mark.parametrize("storage", ["host", "device"])
def test_state_only_for_trained_clients_round_trips_through_trained(storage):
    """Two replicas, each its own cohorts; slots grow past the initial capacity; ``trained`` lists
    exactly the clients that trained, in id order, and loads into registries that each hold
    part of the clients (as processes would)."""
    n = 10
    algorithm, _, shared, private = setup()
    one = algorithm.init_private(shared, private)
    initial = jax.tree.map(lambda x: np.stack([x, x + 1]).astype(x.dtype), jax.device_get(one))
    tasks = tasks_for(n)
    reg = ClientRegistry(initial, tasks, capacity=2, storage=storage)
    rng = np.random.default_rng(0)
    written = {}
    for ids, mask in (
        (np.array([[1, 4, 7], [2, 4, 9]]), None),
        (np.array([[4, 5, 6], [0, 1, 2]]), np.array([[1, 1, 0], [1, 0, 1]], bool)),
    ):
        values = jax.tree.map(
            lambda x: rng.normal(size=(2, 3) + x.shape[1:]).astype(x.dtype), initial
        )
        reg.scatter(ids, values, mask)
        keep = np.ones(ids.shape, bool) if mask is None else mask
        for r, c in zip(*np.nonzero(keep)):
            written[r, ids[r, c]] = jax.tree.map(lambda x: x[r, c], values)
    assert reg.capacity > 3 and list(reg.used) == [4, 4]
    ids, values = reg.trained()
    np.testing.assert_array_equal(ids, [[1, 4, 5, 7], [0, 2, 4, 9]])
    for r in range(2):
        for t, k in enumerate(ids[r]):
            assert max_diff(jax.tree.map(lambda x: x[r, t], values), written[r, k]) == 0.0
    got = private_of(reg, [3])  # never trained: its replica's initial state
    assert max_diff(got, jax.tree.map(lambda x: x[:, None], initial)) == 0.0

    halves = [np.arange(5), np.arange(5, 10)]
    for owned in halves:
        part = ClientRegistry(initial, gather(tasks, owned), client_ids=owned, storage=storage)
        part.restore_trained(ids, values)
        want = jax.tree.map(lambda x: x[:, owned], dense(reg, n))
        assert max_diff(private_of(part, owned), want) == 0.0
        assert sum(part.used) == sum(np.isin(ids, owned).sum(1))
