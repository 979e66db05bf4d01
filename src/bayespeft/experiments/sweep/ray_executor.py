"""``--executor ray``: each run a Ray task with the sweep's resource request; the driver owns the store.

The driver (the ``bayespeft sweep`` process) claims runs from the store as it does locally, submits each as a Ray
task (``num_cpus``, ``num_gpus``, ``memory`` from the sweep file's ``resources:``) running
:func:`~.runner.execute_run` in a Ray worker, keeps their heartbeats while they run, and records each outcome
(:meth:`SweepStore.finish`) when the task returns: workers never open the store, so its semantics are exactly
those of the local executor. At most as many runs are claimed as the cluster can run at once, so that other
drivers can share the pending ones. A task that dies (worker killed, node lost) is recorded as failed with Ray's
error; Ctrl-C puts the in-flight runs back to pending.

Without ``--address`` a local Ray instance is started (and stopped at the end); with one, the driver connects to
that cluster, whose workers must have bayespeft installed and see the sweep directory (shared filesystem).
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from .executor import ExecOptions, Heartbeat, SweepProgress, record_outcome, task_of
from .runner import RunTask, execute_run
from .spec import Resources, SweepError
from .store import Owner, SweepStore


def _run_task(task: RunTask) -> dict[str, Any]:
    return execute_run(task)


class RayExecutor:
    name = "ray"

    def __init__(self, resources: Resources, address: str | None = None, num_cpus: int | None = None) -> None:
        self.resources, self.address, self.num_cpus = resources, address, num_cpus

    def _capacity(self, ray: Any) -> int:
        total = ray.cluster_resources()
        slots = [total.get("CPU", 1.0) // self.resources.cpus]
        if self.resources.gpus:
            slots.append(total.get("GPU", 0.0) // self.resources.gpus)
        n = int(min(slots))
        if n < 1:
            raise SweepError(f"the Ray cluster ({dict(total)}) cannot fit one run's resources {vars(self.resources)}; "
                             "lower resources: in the sweep file")
        return n

    def run(self, store: SweepStore, sweep_dir: Path, opts: ExecOptions, progress: SweepProgress) -> int:
        try:
            import ray
        except ImportError:
            raise SweepError("--executor ray needs Ray: pip install 'bayespeft[ray]' (or \"ray[default]\")") from None
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, num_cpus=self.num_cpus if self.address is None else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        owner = Owner.current()
        remote = ray.remote(num_cpus=self.resources.cpus, num_gpus=self.resources.gpus,
                            memory=self.resources.memory, max_retries=0)(_run_task)
        in_flight: dict[Any, Any] = {}
        n = 0
        try:
            capacity = self._capacity(ray)
            with Heartbeat(store.path, owner, opts.heartbeat_s) as hb:
                while True:
                    while len(in_flight) < capacity and (opts.max_experiments is None or n < opts.max_experiments):
                        store.reclaim_stale(opts.stale_after_s)
                        rec = store.claim(owner)
                        if rec is None:
                            break
                        n += 1
                        in_flight[remote.remote(task_of(rec))] = rec
                        hb.add(rec.id)
                    if not in_flight:
                        break
                    done, _ = ray.wait(list(in_flight), num_returns=1)
                    for ref in done:
                        rec = in_flight.pop(ref)
                        hb.discard(rec.id)
                        try:
                            outcome = ray.get(ref)
                        except Exception as e:  # noqa: BLE001  the task died: record it, go on
                            outcome = {"status": "failed", "error": f"{type(e).__name__}: {e}".strip()[:2000],
                                       "traceback": traceback.format_exc()}
                        record_outcome(store, rec, owner, outcome, sweep_dir, opts, progress)
        except BaseException:
            for ref, rec in in_flight.items():
                ray.cancel(ref, force=True)
                store.release(rec.id, owner, "interrupted (driver stopped)")
            raise
        finally:
            if started_here:
                ray.shutdown()
        return n
