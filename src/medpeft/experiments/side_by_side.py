"""Independent jobs side by side, one process per share of the CPU cores, with one progress bar.

A batch-1 step of a 3D network this size does not keep two threads busy: on 2 cores a demo cell
trained 1.34x faster with 2 threads than with 1 (x86_64 AMD EPYC, float32), so two cells at once,
one thread each, finish about 1.5x sooner than the same cells one after the other (the demo:
17 min 22 s -> 11 min 48 s). The demo's jobs (its cells, its federation, its zero-shot scores)
and a benchmark grid's cells do not depend on each other, so they can run this way on a CPU. Each
job runs in a fresh (spawned) process that reports its progress to the parent's bar through a
queue; on a GPU, or with one core, the jobs run in this process one after the other. When fewer
jobs are left than workers (the last long cell), the running jobs take the idle cores' threads
at their next progress step (the demo, same hour: 11:21 -> 10:31, its K=1 cell's last 1.5 min
on 2 threads instead of one, the same Dice).

A job is a top-level function called as ``fn(*args, **kwargs, progress=reporter)``: what it
returns comes back in the order of the jobs. A job that fails raises here after the others
finished, so their results (each job keeps its own on disk, e.g.
:func:`medpeft.experiments.cell.cached`) are not lost.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medpeft.device import chosen_device, resolve_device, set_device
from medpeft.progress import Reporter
from medpeft.startup import skip_unused_optional_packages


@dataclass(frozen=True)
class Job:
    """``fn(*args, **kwargs, progress=...)``: ``fn`` a module-level function, the arguments
    picklable."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def __call__(self, progress: Reporter | None) -> Any:
        return self.fn(*self.args, **self.kwargs, progress=progress)


def cpu_cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(jobs: int, device: str | None = None) -> int:
    """How many jobs run at once: one per core on a CPU (at most one per job); one on a GPU,
    whose memory and stream the jobs would otherwise share."""
    if resolve_device(device).type != "cpu":
        return 1
    return max(1, min(jobs, cpu_cores()))


class QueueReporter:
    """A :class:`Reporter` in a worker process: every call becomes a message to the parent's bar.
    Task ids are made here (``pid``, n), so that ``add_task`` need not wait for an answer."""

    def __init__(self, queue) -> None:
        self.queue, self.count = queue, 0

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0,
                 completed: int = 0, visible: bool = True, **fields: Any) -> tuple[int, int]:
        self.count += 1
        key = (os.getpid(), self.count)
        self.queue.put(("add", key, dict(description=description, start=start, total=total,
                                         completed=completed, visible=visible, **fields)))
        return key

    def advance(self, task_id: Any, advance: float = 1) -> None:
        _fit_threads()
        self.queue.put(("update", task_id, {"advance": advance}))

    def update(self, task_id: Any, **kwargs: Any) -> None:
        if "advance" in kwargs:  # a step (the training loop reports its steps this way)
            _fit_threads()
        self.queue.put(("update", task_id, kwargs))


def _relay(queue, progress: Reporter | None, workers: set[int]) -> None:
    """Apply the workers' messages to the parent's bar until the ``None`` that ends them; note
    each worker's process id as it starts."""
    tasks: dict = {}
    while (message := queue.get()) is not None:
        kind, key, fields = message
        if kind == "worker":
            workers.add(key)
        elif progress is None:
            continue
        elif kind == "add":
            tasks[key] = progress.add_task(**fields)
        elif key in tasks:
            progress.update(tasks[key], **fields)


_reporter: QueueReporter | None = None
_running = None  # the parent's count of jobs running now (a shared ``multiprocessing.Value``)


def _fit_threads() -> int:
    """This worker's share of the cores for the jobs running now: all of a core count divided
    among them, so a job left alone takes the cores the finished ones freed."""
    threads = max(1, cpu_cores() // max(1, _running.value))
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


def _start_worker(queue, running, device: str | None) -> None:
    """A worker's set-up: MONAI's unused imports skipped, the parent's device choice
    (``--device`` is not inherited by a spawned process)."""
    skip_unused_optional_packages()
    set_device(device)
    global _reporter, _running
    _reporter, _running = QueueReporter(queue), running
    queue.put(("worker", os.getpid(), None))


def _call(job: Job) -> Any:
    # the processes the job starts (nnU-Net) take the share it starts with
    os.environ["OMP_NUM_THREADS"] = str(_fit_threads())
    return job(_reporter)


class _RunningCount:
    """How many jobs run now: the workers while jobs wait, then the unfinished ones."""

    def __init__(self, context, jobs: int, workers: int) -> None:
        self.unfinished, self.workers, self.lock = jobs, workers, threading.Lock()
        # what the workers read. Without a lock: a worker killed (Ctrl-C) while it held one would
        # leave the parent's next write waiting for ever. One int, written by one thread here.
        self.shared = context.Value("i", min(workers, jobs), lock=False)

    def finished(self, _future=None) -> None:
        with self.lock:
            self.unfinished -= 1
            self.shared.value = max(1, min(self.workers, self.unfinished))


def descendants(roots: set[int]) -> set[int]:
    """The processes started under ``roots`` (their children, and theirs), read from ``/proc``;
    none where there is no ``/proc``. A job's Ray daemons ignore Ctrl-C and outlived a killed
    worker by minutes."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process that just ended
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = set(), set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def run_side_by_side(jobs: Sequence[Job], progress: Reporter | None = None, *,
                     workers: int | None = None, device: str | None = None,
                     done: Callable[[int, Any], None] | None = None) -> list[Any]:
    """Every job's result, in order; ``workers`` at once (default :func:`worker_count`), each
    with its share of the cores' threads. ``done(i, result)`` is called in the jobs' order as
    each result is in (e.g. to write a table as it grows). Interrupted (Ctrl-C), the workers are
    ended at once: each job keeps its own progress (an adaptation resumes from its checkpoint)."""
    done = done or (lambda i, result: None)
    device = device or chosen_device()  # the workers take the choice of ``--device`` as well
    workers = min(workers or worker_count(len(jobs), device), max(1, len(jobs)))
    if workers == 1:
        results = []
        for i, job in enumerate(jobs):
            results.append(job(progress))
            done(i, results[-1])
        return results
    context = multiprocessing.get_context("spawn")  # no fork of a process with OpenMP threads
    queue, pids = context.Queue(), set()
    relay = threading.Thread(target=_relay, args=(queue, progress, pids), daemon=True)
    relay.start()
    running = _RunningCount(context, len(jobs), workers)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(queue, running.shared, device))
    interrupted = False
    try:
        futures = [pool.submit(_call, job) for job in jobs]
        for future in futures:
            future.add_done_callback(running.finished)
        for i, future in enumerate(futures):  # all of them: a failure does not cut the others short
            if future.exception() is None:
                done(i, future.result())
    except BaseException:  # interrupted: the running jobs end now, not when they finish
        # the pool's own record of the processes it spawned (CPython's ``_processes``, filled as
        # each starts) and the workers' reports, which can still be in the queue when Ctrl-C
        # comes; then what the jobs started (found before their workers go)
        workers_now = set(pids) | set(getattr(pool, "_processes", None) or ())
        for pid in workers_now | descendants(workers_now):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # SIGTERM may be ignored (an inherited SIG_IGN)
        interrupted = True
        raise
    finally:
        # the workers exit, their last progress sent; killed ones are not waited for (the pool's
        # manager thread can take a long while to notice them)
        pool.shutdown(wait=not interrupted, cancel_futures=True)
        if not interrupted:  # a worker killed while sending held the queue's lock: send nothing
            queue.put(None)  # (the parent's exit would wait for ever to flush it)
            relay.join(timeout=10)
    return [future.result() for future in futures]
