"""Independent jobs side by side: each in its own process with its share of the cores, results in
the jobs' order, progress relayed to the parent's bar, and a failing job does not cut the others
short."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medpeft.experiments.side_by_side import Job, cpu_cores, run_side_by_side, worker_count


class Recorder:
    """A Reporter that keeps what it was told."""

    def __init__(self) -> None:
        self.tasks: dict[int, dict] = {}

    def add_task(self, description, start=True, total=100.0, completed=0, visible=True, **fields):
        self.tasks[len(self.tasks)] = {"description": description, "total": total, "done": completed}
        return len(self.tasks) - 1

    def advance(self, task_id, advance=1):
        self.tasks[task_id]["done"] += advance

    def update(self, task_id, **kwargs):
        self.tasks[task_id]["done"] += kwargs.get("advance", 0)


def meet(meeting: str, name: str, parties: int, seconds: float) -> None:
    """Arrive at the ``meeting`` folder and wait for ``parties`` jobs there (they run at once)."""
    import time
    Path(meeting, name).touch()
    deadline = time.monotonic() + seconds
    while len(list(Path(meeting).iterdir())) < parties:
        assert time.monotonic() < deadline, "the jobs did not run side by side"
        time.sleep(0.05)


def counted(name: str, steps: int, meeting: str, parties: int, *, progress) -> dict:
    """Counts, once ``parties`` jobs have arrived at the ``meeting`` folder (they run at once)."""
    meet(meeting, name, parties, 120)
    task = progress.add_task(f"count {name}", total=steps)
    for _ in range(steps):
        progress.advance(task)
    from medpeft.device import chosen_device
    return {"name": name, "pid": os.getpid(), "threads": torch.get_num_threads(),
            "device": chosen_device()}


def fails_or_marks(mark: str, fail: bool, *, progress) -> str:
    if fail:
        raise ValueError("this job fails")
    import time
    time.sleep(1.0)  # still running when the other job has failed
    Path(mark).write_text("finished")
    return mark


def test_jobs_run_in_their_own_processes_with_results_in_order_and_progress_relayed(tmp_path,
                                                                                  monkeypatch):
    """Two jobs at once, each in a worker with its share of the cores and the parent's
    ``--device`` choice (a spawned process does not inherit it); results in the jobs' order."""
    from medpeft import device
    monkeypatch.setattr(device, "_chosen", "cpu")
    bar = Recorder()
    results = run_side_by_side([Job(counted, (name, steps, str(tmp_path), parties)) for
                                name, steps, parties in (("a", 3, 2), ("b", 5, 2), ("c", 2, 3))],
                               bar, workers=2)
    assert [r["name"] for r in results] == ["a", "b", "c"]
    assert all(r["pid"] != os.getpid() for r in results)
    assert len({r["pid"] for r in results}) == 2  # a and b at once, c after one of them
    # at least their share of the cores; more once the others ended (the last test)
    assert all(max(1, cpu_cores() // 2) <= r["threads"] <= cpu_cores() for r in results)
    assert all(r["device"] == "cpu" for r in results)
    relayed = {t["description"]: (t["done"], t["total"]) for t in bar.tasks.values()}
    assert relayed == {"count a": (3, 3), "count b": (5, 5), "count c": (2, 2)}


def threads_until_alone(meeting: str, *, progress) -> tuple[int, int]:
    """This worker's threads beside the other job, and once the other has finished (read at
    each progress step, as a training loop reports them)."""
    import time
    deadline = time.monotonic() + 60
    meet(meeting, "long", 2, 60)  # the other job has started
    beside, task = torch.get_num_threads(), progress.add_task("long", total=None)
    while torch.get_num_threads() != cpu_cores() and time.monotonic() < deadline:
        progress.update(task, advance=1, description="long")  # as the training loop steps
        time.sleep(0.05)
    return beside, torch.get_num_threads()


def test_the_last_running_job_takes_the_cores_the_others_freed(tmp_path):
    """The demo's last cell ran its final minutes on one thread of two idle cores: a job left
    alone takes every core at its next progress step."""
    results = run_side_by_side([Job(threads_until_alone, (str(tmp_path),)),
                                Job(counted, ("short", 1, str(tmp_path), 2))], workers=2)
    assert results[0] == (max(1, cpu_cores() // 2), cpu_cores())


def test_one_worker_runs_the_jobs_here_with_the_callers_bar(tmp_path):
    bar = Recorder()
    results = run_side_by_side([Job(counted, ("a", 2, str(tmp_path), 1))], bar, workers=1)
    assert results[0]["pid"] == os.getpid() and bar.tasks[0]["done"] == 2


def test_a_failing_job_raises_after_the_others_finished(tmp_path):
    mark = tmp_path / "other.txt"
    with pytest.raises(ValueError, match="this job fails"):
        run_side_by_side([Job(fails_or_marks, ("", True)), Job(fails_or_marks, (str(mark), False))],
                         workers=2)
    assert mark.read_text() == "finished"


def test_one_job_per_core_on_a_cpu():
    assert worker_count(1, "cpu") == 1
    assert worker_count(64, "cpu") == cpu_cores()


def test_an_interrupt_ends_the_running_jobs_at_once():
    """Ctrl-C in the parent does not wait for the jobs to finish: their workers are ended, and the
    parent exits. (In a process of its own, so that the interrupt reaches it and not the test
    runner.) Three times, at moments a little apart: the parent once hung at its exit in
    8 of 8 such runs, when a worker was killed while it held the progress queue's lock."""
    for delay in (0.0, 0.1, 0.3):
        workers = _interrupt_reporting_jobs(after=delay)
        for pid in workers:  # ended, not left running (the jobs' own processes too)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not Path(f"/proc/{pid}").exists() or \
                Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _interrupt_reporting_jobs(*, after: float) -> list[int]:
    """Ctrl-C to two jobs reporting progress, ``after`` seconds into them; the pids of their
    workers and of the processes the jobs started."""
    script = Path(__file__).parent / "fixtures" / "interrupted_jobs.py"
    # a session of its own: a check that fails below takes the jobs' workers down with it, instead
    # of leaving them orphaned, spinning and filling memory under the rest of the suite
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        lines = [child.stdout.readline().split() for _ in range(2)]  # both jobs running
        workers = [int(pid) for line in lines for pid in line[1:]]  # theirs and what they started
        time.sleep(after)
        t0 = time.monotonic()
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) == 130 and "interrupted" in child.stdout.read()
        assert time.monotonic() - t0 < 20
        return workers
    except BaseException:
        os.killpg(child.pid, signal.SIGKILL)
        raise
    finally:
        child.kill()
