"""The job runner: claims due jobs from the ``jobs`` table and runs their handlers.

Any number of workers, in any number of processes, share one table. A claimed job is
leased to its worker (``locked_by`` + ``lease_expires_at``, renewed by a heartbeat); a job
whose lease runs out is rescued and runs again elsewhere, and the late worker's
completion is refused because every write it makes is fenced on ``locked_by`` + ``attempts``.
The handler's work and the deletion of the job commit in one transaction, so a job is
done exactly when its effects are durable.

One vocabulary throughout: a *claim* is the jobs one claim statement returned; a *batch*
is what runs as one (jobs that share, in one transaction, or a single job); a *slot* is
one of the worker's ``concurrency`` tasks, running its batches in turn under one
heartbeat. The public interface is ``Worker``; the files behind it:

- ``_loop.py``: ``Worker``: start and stop, the claim loop, housekeeping, and dealing a
  claim into batches and slots.
- ``_batch.py``: running a slot's batches: together, as a batch of effects, or alone.
- ``_outcomes.py``: what a failed or interrupted job's next step is, and each outcome's
  count.

The worker runs the handlers that are registered (``jobs.registry``); whoever starts one
imports ``careflow.tasks`` first, as ``app.py`` and ``careflow.worker_process`` do.
"""

from careflow.jobs.worker._loop import Worker

__all__ = ["Worker"]
