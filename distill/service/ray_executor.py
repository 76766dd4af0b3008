"""`distill serve --executor ray`: jobs claimed like the local executor's, their stages run on a Ray cluster.

`RayExecutor` is the `LocalExecutor` with one difference: each job's worker process joins the cluster
(`--ray-address`) and runs every stage's work there as a Ray task with a resource request
(`distill.scale.ray_stages`). Everything else is the local executor's: the lease in the jobs table
(claimed with one conditional UPDATE, renewed while the job runs, re-claimed when it runs out), the job's
status and events written by the worker, cancellation, and a job whose worker dies resumed (bounded attempts). The
worker process is the tasks' Ray driver, so killing it (a cancel, a server stop) stops its tasks too.

Ray is imported only by the worker; the server merely checks that it is installed.
"""

from __future__ import annotations

from sqlalchemy.orm import sessionmaker

from distill.scale import import_ray
from distill.service.executor import LocalExecutor
from distill.service.quotas import Limits


class RayExecutor(LocalExecutor):
    def __init__(self, sessions: sessionmaker, database_url: str, *, max_jobs: int = 1, ray_address: str,
                 limits: Limits = Limits()):
        import_ray()  # a clear error now rather than a failed job later
        super().__init__(sessions, database_url, max_jobs=max_jobs, limits=limits)
        self.ray_address = ray_address

    def _worker_command(self, job_id: str) -> list[str]:
        return [*super()._worker_command(job_id)[:-1], "--ray-address", self.ray_address, job_id]
