"""Where a run's workers execute. A backend is one module here with one class satisfying
`Backend`: it runs `worker.run_worker` for each task (in processes of this host, on a Ray
cluster, ...), holds every worker at a ready barrier until all are warm, calls `on_start` once
then (the runner scrapes the server's /metrics there), and hands back what each worker returned.
A new backend is one file and one line in `backend_for`.
"""

from __future__ import annotations

from netbench.backends.base import Backend


def backend_for(name: str, ray_address: str | None = None) -> Backend:
    if name == "ray":
        from netbench.backends.ray import RayBackend  # Ray is an optional extra

        return RayBackend(ray_address)
    from netbench.backends.local import LocalBackend

    return LocalBackend()
