"""Sweeps: R federations of ONE method (seeds × scalar hyperparameters) trained as ONE program.

Every run is a sweep: one that sweeps nothing is R = 1, trained by the same program and loop.

    python launch.py --config configs/demo.py --workdir runs/s --config.sweep.seed='(0,1,2)'
    python launch.py ... --config.sweep.seed='(0,1,2)' --config.sweep.optim.learning_rate='(1e-3,3e-4)'

``config.sweep`` mirrors the config (``config_base.sweep_section``): every field set to a tuple is
swept. ``mode="grid"`` trains every combination, seeds varying fastest (replica
``r = setting · n_seeds + seed index``); ``mode="zip"`` pairs the i-th values of every field.
Replica r computes what a run of :meth:`Sweep.replica_config` computes (tests/test_sweep.py):
its seed gives its own trainable init, server key (so its own DP noise), cohorts and data order;
its swept scalars are traced values of the one compiled round (``fl.hparams``). The frozen
backbone is built once, from the first replica's seed, and shared; with a pretrained backbone
(``model.checkpoint``) that is every run's backbone, with a random one every replica uses the
first replica's.

Only ``seed``, ``clients_per_round`` (each replica draws cohorts of its own size, padded to the
largest with slots that weigh nothing: ``train.cohorts``) and the fields of
``fl.hparams.SWEEPABLE`` can be swept; anything that changes shapes or structure is refused in
one line naming it (:class:`SweepConfigError`).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import jax
import ml_collections
import numpy as np

from feddat_jax.errors import ConfigError
from feddat_jax.fl.hparams import SWEEPABLE

PyTree = Any
SEED = "seed"
# swept on the host: who trains each round (each replica samples its own cohort size; the
# cohorts are padded to the largest with slots that weigh nothing), not a traced scalar
COHORT_SIZE = "clients_per_round"
# swept on the host too: how many clients each replica's federation has. The run registers the
# largest count; replica r samples and evaluates clients 0..N_r-1 only. Exact only where a
# client's data do not depend on how many clients there are (the embedded benchmark's own
# clients: ``data.embedded_families``), so other set-ups are refused
NUM_CLIENTS = "data.num_clients"
HOST_FIELDS = (SEED, COHORT_SIZE, NUM_CLIENTS)
MODES = ("grid", "zip")


class SweepConfigError(ConfigError):
    """``config.sweep`` asks for something a sweep cannot do (one line at ``launch.py``'s error
    boundary, exit status 2)."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The replicas of one method's run: R settings of the swept fields (R = 1, no fields, when
    nothing is swept). The state always has the replica axis; only what a person reads (metrics
    rows, TensorBoard runs, labels) leaves out the replica of a run that sweeps nothing."""

    fields: tuple[str, ...] = ()
    values: tuple[tuple[Any, ...], ...] = ((),)

    @property
    def swept(self) -> bool:
        """Whether the config sweeps anything (then rows and labels name each replica)."""
        return bool(self.fields)

    @property
    def size(self) -> int:
        return len(self.values)

    @property
    def hparam_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields if f not in HOST_FIELDS)

    def setting(self, r: int) -> dict[str, Any]:
        return dict(zip(self.fields, self.values[r]))

    def seed(self, config: ml_collections.ConfigDict, r: int) -> int:
        return int(self.setting(r).get(SEED, config.seed))

    def seeds(self, config: ml_collections.ConfigDict) -> list[int]:
        return [self.seed(config, r) for r in range(self.size)]

    def replica_config(
        self, config: ml_collections.ConfigDict, r: int
    ) -> ml_collections.ConfigDict:
        """The config of the plain run replica r equals (its values set, no sweep)."""
        out = config.copy_and_resolve_references()
        with out.unlocked():
            for path, value in self.setting(r).items():
                *parents, leaf = path.split(".")
                node = out
                for p in parents:
                    node = node[p]
                node[leaf] = type(node[leaf])(value)
            if "sweep" in out:
                del out["sweep"]
            if NUM_CLIENTS in self.fields:  # a sample of at most the replica's own clients
                out.eval_clients = min(int(out.eval_clients), int(out.data.num_clients))
        return out

    def population(self, r: int, registered: int) -> int:
        """Replica r's number of clients: its swept ``data.num_clients`` (its clients are ids
        ``0..N_r-1``), else every registered client."""
        return int(self.setting(r).get(NUM_CLIENTS, registered))

    def registered_config(self, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        """``config`` with ``data.num_clients`` at the sweep's largest count (the clients the
        run registers); ``config`` itself when the count is not swept."""
        if NUM_CLIENTS not in self.fields:
            return config
        out = config.copy_and_resolve_references()
        out.data.num_clients = max(self.population(r, 0) for r in range(self.size))
        return out

    def hparams(self) -> dict[str, np.ndarray]:
        """The swept scalars as float32 ``[R]`` (``{}`` when none is swept: nothing is traced, the
        config's constants are compiled in)."""
        return {
            f: np.asarray([self.setting(r)[f] for r in range(self.size)], np.float32)
            for f in self.hparam_fields
        }

    def label(self, r: int) -> str:
        """``"seed=1 optim.learning_rate=0.001"`` (empty unswept)."""
        return " ".join(f"{k}={v:g}" for k, v in self.setting(r).items())

    def run_names(self) -> list[str] | None:
        """One TensorBoard run name per replica (``seed=1,optim.learning_rate=0.001``); None
        when nothing is swept (one run)."""
        if not self.swept:
            return None
        return [self.label(r).replace(" ", ",") for r in range(self.size)]

    def group(self, r: int) -> tuple:
        """Replica r's setting without its seed: replicas of one group differ only by seed."""
        return tuple(v for f, v in zip(self.fields, self.values[r]) if f != SEED)

    def row_fields(self, config: ml_collections.ConfigDict, r: int) -> dict[str, Any]:
        """What every metrics row of replica r carries: ``replica``, ``seed`` and the swept
        values (nothing when nothing is swept)."""
        if not self.swept:
            return {}
        return {"replica": r, SEED: self.seed(config, r), **self.setting(r)}

    # ---- the replica axis on the host side -------------------------------------------------------
    def stack(self, per_replica: list[PyTree]) -> PyTree:
        """Host values of every replica -> one value with a leading R axis."""
        return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *per_replica)

    def unstack(self, tree: PyTree) -> list[PyTree]:
        return [jax.tree.map(lambda x, r=r: x[r], tree) for r in range(self.size)]


def _leaves(node: ml_collections.ConfigDict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            out += _leaves(value, path + ".")
        else:
            out.append((path, value))
    return out


def _check_field(path: str, config: ml_collections.ConfigDict, method) -> None:
    if path in ("method", "compare_methods"):
        raise SweepConfigError(
            f"config.sweep.{path}: a sweep varies the scalars of ONE method; compare methods "
            'with --config.compare_methods=\'("feddat","fedavg_adapter")\''
        )
    if path not in HOST_FIELDS and path not in SWEEPABLE:
        raise SweepConfigError(
            f"config.sweep.{path}: {path} cannot be swept (it changes the program's shapes or "
            f"structure, or is no scalar hyperparameter); sweepable: {', '.join(HOST_FIELDS)}, "
            f"{', '.join(SWEEPABLE)}; run other values separately"
        )
    if path == NUM_CLIENTS:
        _check_num_clients(config)
    if (
        path in (COHORT_SIZE, NUM_CLIENTS)
        and config.dp.enabled
        and config.dp.get("sampling") == "poisson"
    ):
        raise SweepConfigError(
            f"config.sweep.{path}: Poisson cohorts have one static size for the whole run; sweep "
            "the cohort size with dp.sampling='fixed' or run each rate separately"
        )
    if method is None:
        return
    if path.startswith("feddat.") and method.algorithm != "feddat":
        raise SweepConfigError(
            f"config.sweep.{path}: method {config.method!r} is not FedDAT, {path} has no effect "
            "on it; drop it from the sweep"
        )
    if path == "fedprox_mu" and "prox_mu" not in method.options:
        raise SweepConfigError(
            f"config.sweep.{path}: method {config.method!r} has no proximal term, {path} has no "
            "effect on it; sweep it with fedprox_adapter"
        )
    if path.startswith("dp.") and not config.dp.enabled:
        raise SweepConfigError(
            f"config.sweep.{path}: DP is off, {path} has no effect; add --config.dp.enabled=True"
        )


def _check_num_clients(config: ml_collections.ConfigDict) -> None:
    """A client-count sweep nests the federations (replica r's clients are the first N_r of the
    largest), which holds only where adding clients leaves the others' data alone."""
    data = config.data
    if data.source != "embedded" or data.partition != "natural":
        raise SweepConfigError(
            f"config.sweep.{NUM_CLIENTS}: only the embedded benchmark's own clients "
            "(data.source='embedded', data.partition='natural') stay the same clients as their "
            f"number grows; run each count of data.source={data.source!r}, "
            f"data.partition={data.partition!r} separately"
        )
    if not config.model.checkpoint:
        raise SweepConfigError(
            f"config.sweep.{NUM_CLIENTS}: a random-init model's word vocabulary is built from "
            "the registered clients' questions, so it changes with their number; set "
            "model.checkpoint (the demo's is feddat_jax/assets/tiny_vilt)"
        )
    if tuple(config.get("references", ())):
        raise SweepConfigError(
            f"config.sweep.{NUM_CLIENTS}: the references pool or score one federation's clients; "
            "add --config.references='()' (run them per client count separately)"
        )


def _check_values(path: str, values: tuple) -> tuple:
    if not isinstance(values, (tuple, list)) or not values:
        raise SweepConfigError(f"config.sweep.{path} must be a non-empty tuple, got {values!r}")
    for v in values:
        is_number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        whole = path in (SEED, NUM_CLIENTS)
        if not is_number or (whole and float(v) != int(v)) or (path == NUM_CLIENTS and v < 1):
            kind = {SEED: "integer seeds", NUM_CLIENTS: "client counts >= 1"}.get(path, "numbers")
            raise SweepConfigError(f"config.sweep.{path} must hold {kind}; got {v!r}")
    return tuple(int(v) if path in (SEED, NUM_CLIENTS) else float(v) for v in values)


def sweep_from_config(config: ml_collections.ConfigDict, method=None) -> Sweep:
    """The validated sweep of ``config`` (``Sweep()`` when nothing is swept). ``method`` (a
    ``methods.Method``) also refuses swept fields that have no effect on it."""
    section = config.get("sweep")
    if section is None:
        return Sweep()
    mode = section.get("mode", "grid")
    if mode not in MODES:  # refused even when nothing is swept yet
        raise SweepConfigError(f"config.sweep.mode={mode!r} is not one of {MODES}")
    swept = {
        path: value
        for path, value in _leaves(section)
        if path != "mode" and value not in ((), None)
    }
    if not swept:
        return Sweep()
    for path in swept:
        _check_field(path, config, method)
    swept = {path: _check_values(path, value) for path, value in swept.items()}
    order = [p for p in (NUM_CLIENTS, COHORT_SIZE, *SWEEPABLE, SEED) if p in swept]
    if mode == "grid":
        combos = list(itertools.product(*(swept[p] for p in order)))
    else:  # zip
        lengths = {p: len(swept[p]) for p in order}
        if len(set(lengths.values())) != 1:
            raise SweepConfigError(
                f"config.sweep.mode='zip' pairs the i-th values, so every swept field needs the "
                f"same number of values; got {lengths}"
            )
        combos = list(zip(*(swept[p] for p in order)))
    return Sweep(tuple(order), tuple(combos))
