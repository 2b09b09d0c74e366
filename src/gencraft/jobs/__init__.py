"""Long work in worker processes: data preparation, training, evaluation (the studio's jobs).

:class:`~gencraft.jobs.manager.JobManager` keeps a home's queue and runs it; the kinds of job are
the table :data:`gencraft.jobs.kinds.KINDS`; :mod:`gencraft.jobs.worker` is the worker process.
The server's routes are in :mod:`gencraft.server.jobs_api`, the CLI in :mod:`gencraft.cli.jobs`.
"""

from __future__ import annotations

from gencraft.jobs.kinds import KINDS, JobKind
from gencraft.jobs.manager import LIVE, TERMINAL, Conflict, JobManager, JobsUnavailable

__all__ = ["KINDS", "LIVE", "TERMINAL", "Conflict", "JobKind", "JobManager", "JobsUnavailable"]
