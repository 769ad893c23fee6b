"""A federation on real Flower processes on this machine: one SuperLink, one SuperNode per hospital.

Everything runs on 127.0.0.1 with free ports, offline, with ``FLWR_HOME`` inside the run folder
(no managed ``:local:`` SuperLink, no dependency installation). Every connection is TLS under the
run's own CA, and the SuperLink admits only SuperNodes whose keys were registered for the listed
hospitals (:mod:`medpeft.federated.credentials`). Each process starts in its own
process group and the whole group is stopped at the end, so the ``flower-superexec`` children
that run the ServerApp and ClientApps go too, also when the run fails or is interrupted.
Logs: ``out/logs/*.log``.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from medpeft.federated.config import FedConfig, hospital_name
from medpeft.federated.credentials import (
    RunCredentials,
    hospital_credentials,
    make_credentials,
    node_key_pair,
)
from medpeft.io import write_text

APP_NAME = "medpeft-federation"
CONNECTION = "medpeft-local"


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_app(folder: Path, config_path: Path) -> Path:
    """A Flower app folder whose components are medpeft's apps, run config -> the YAML."""
    write_text(folder / "pyproject.toml", f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{APP_NAME}"
version = "1.0.0"
description = "medpeft federated few-shot PEFT"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "medpeft"

[tool.flwr.app.components]
serverapp = "medpeft.federated.components:server_app"
clientapp = "medpeft.federated.components:client_app"

[tool.flwr.app.config]
medpeft-config = "{config_path.resolve()}"
""")
    return folder


def write_connection(flwr_home: Path, control_port: int, ca: Path) -> None:
    """The ``flwr`` CLI's connection: TLS, trusting the run's own CA only."""
    write_text(flwr_home / "config.toml", f"""[superlink]
default = "{CONNECTION}"

[superlink.{CONNECTION}]
address = "127.0.0.1:{control_port}"
root-certificates = "{ca.resolve()}"
""")


def _tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else name


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop ``proc`` and every process of its group (SIGTERM, then SIGKILL)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; children of the group may linger
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return


class Processes:
    """Flower processes started in their own groups, all stopped on exit."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs, self.procs = env, logs, []
        self.named: dict[str, subprocess.Popen] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        self.named[name] = proc
        return proc

    def __enter__(self) -> Processes:
        # SIGTERM (a scheduler's kill, `timeout`) ends the run as Ctrl-C does, through __exit__
        self.previous_handler = None
        if threading.current_thread() is threading.main_thread():
            self.previous_handler = signal.signal(signal.SIGTERM, _terminated)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous_handler is not None:  # a second SIGTERM must not cut the clean-up short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for proc in reversed(self.procs):
                stop_group(proc)
            stop_marked(self.env["FLWR_HOME"])
        finally:
            if self.previous_handler is not None:
                signal.signal(signal.SIGTERM, self.previous_handler)


def _terminated(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def marked_processes(flwr_home: str, variable: str = "FLWR_HOME") -> list[int]:
    """Live processes (Linux /proc) whose environment carries this run's ``FLWR_HOME`` (or
    ``variable``): Flower starts its ServerApp / ClientApp processes in sessions of their own,
    out of our groups (and torchrun its ranks)."""
    marker, pids = f"{variable}={flwr_home}".encode(), []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.name == str(os.getpid()) or \
                    (proc / "stat").read_text().rsplit(") ", 1)[1].startswith("Z"):
                continue
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return pids


def stop_marked(flwr_home: str, grace: float = 10.0) -> None:
    """Terminate what ``marked_processes`` finds; SIGKILL what is left after ``grace`` s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = marked_processes(flwr_home)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = marked_processes(flwr_home)
            time.sleep(0.2)
        if not pids:
            return


def register(env: dict[str, str], public_key: Path, hospital: str) -> None:
    """List a hospital's SuperNode key with the SuperLink (``flwr supernode register``)."""
    done = subprocess.run([_tool("flwr"), "supernode", "register", str(public_key), CONNECTION],
                          env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"the SuperLink refused to register {hospital}'s key {public_key}: "
                           f"{(done.stdout + done.stderr).strip().splitlines()[-1:]}")


def _supernode(link_port: int, port: int, credentials: RunCredentials, key: Path,
               node_config: str, heartbeat_s: float) -> list[str]:
    """``flower-supernode`` through :mod:`medpeft.federated.supernode` (its heartbeat interval)."""
    return [sys.executable, "-m", "medpeft.federated.supernode", f"{heartbeat_s:g}",
            "--superlink", f"127.0.0.1:{link_port}",
            "--root-certificates", str(credentials.ca), "--auth-supernode-private-key", str(key),
            "--port", str(port), "--node-config", node_config]


class DropDrill:
    """A hospital's SuperNode dies without a goodbye (SIGKILL, its ClientApp with it) once it
    has received round ``at_round``'s training; after the SuperLink marks it offline (two missed
    heartbeats: at most 2 x ``heartbeat_s``) and the server has had time to collect the error reply, the
    hospital starts again with the same key and must take part in later rounds."""

    def __init__(self, procs: Processes, index: int, at_round: int,
                 restart: Callable[[int], list[str]], port: int):
        self.procs, self.index, self.at_round = procs, index, at_round
        self.restart, self.port = restart, port
        self.state, self.offline_at, self.asked_at, self.tries = "armed", 0.0, 0.0, 0

    def log(self) -> Path:
        return self.procs.logs / f"supernode-{self.index}.log"

    def step(self) -> None:
        if self.state == "armed":
            text = self.log().read_text(errors="replace") if self.log().is_file() else ""
            if text.count("Receiving: train message") >= self.at_round:
                self.node_id = text.split("SuperNode ID: ", 1)[1].split()[0]
                self.kill()
                self.state = "killed"
        elif self.state == "killed" and time.monotonic() - self.asked_at > 5.0:
            self.asked_at = time.monotonic()  # each `flwr` call costs a Python start: every 5 s
            if self.offline():
                self.state, self.offline_at = "offline", time.monotonic()
        elif self.state == "offline" and time.monotonic() - self.offline_at > 8.0:
            # the ServerApp polls for replies every 3 s: by now it holds the error reply
            self.rejoin()
        elif self.state == "rejoined" and self.rejoined.poll() is not None and self.tries < 3:
            # refused (a SuperLink that still counts the old node online exits it with code 305)
            self.state, self.offline_at = "offline", time.monotonic()

    def rejoin(self) -> None:
        # a port chosen now: one chosen at the start may since be some connection's own
        self.rejoined = self.procs.start(f"supernode-{self.index}-rejoined",
                                         self.restart(free_ports(1)[0]))
        self.state, self.tries = "rejoined", self.tries + 1

    def kill(self) -> None:
        os.killpg(self.procs.named[f"supernode-{self.index}"].pid, signal.SIGKILL)
        for pid in marked_processes(self.procs.env["FLWR_HOME"]):
            try:  # the ClientApp and SuperExec talk to the SuperNode's runtime port
                if f":{self.port}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass

    def offline(self) -> bool:
        listed = subprocess.run([_tool("flwr"), "supernode", "list", CONNECTION, "--format", "json"],
                                env=self.procs.env, capture_output=True, text=True, timeout=60)
        try:
            nodes = json.loads(listed.stdout)["nodes"]
        except (ValueError, KeyError):
            return False
        return any(n["node-id"] == self.node_id and n["status"] == "offline" for n in nodes)


def wait_for_result(out: Path, link: subprocess.Popen, submit: subprocess.Popen,
                    drill: DropDrill | None, timeout: float, *, grace: float = 10.0) -> None:
    """Until the ServerApp has written ``server.json``; a SuperLink that exits, a failed
    ``flwr run``, a run that ended without a result or the timeout end the wait with the log to
    read. Steps the drill meanwhile."""
    deadline, ended, run_log = time.monotonic() + timeout, None, out / "logs" / "flwr-run.log"
    while not (out / "server.json").is_file():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the federation did not finish within {timeout:.0f} s "
                               f"(logs: {out / 'logs'})")
        if link.poll() is not None:
            raise RuntimeError(f"flower-superlink exited ({link.returncode}); see "
                               f"{out / 'logs' / 'superlink.log'}")
        if submit.poll() not in (None, 0):
            raise RuntimeError(f"flwr run failed ({submit.returncode}); see {run_log}")
        ended = ended or (time.monotonic() if submit.poll() == 0 else None)
        if ended and time.monotonic() - ended > grace:  # `flwr run` exits 0 after a failed ServerApp
            raise RuntimeError(f"the ServerApp ended without a result: {last_error(run_log)} "
                               f"(see {run_log})")
        if drill is not None:
            drill.step()
        time.sleep(1.0)


def last_error(log: Path) -> str:
    """The last ``SomethingError: ...`` line of a log (a Python traceback's message), or a stand-in."""
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    errors = [line.strip() for line in lines if re.match(r"^\w*(Error|Exception): ", line.strip())]
    return errors[-1] if errors else "no error message in the log"


def deploy(cfg: FedConfig, config_path: Path, timeout: float = 3600.0, *,
           uninvited: int = 0, drop: tuple[int, int] | None = None) -> None:
    """Start a SuperLink (TLS, SuperNode authentication) and a SuperNode per hospital, each with
    its registered key; submit the run with ``flwr run``, wait for the server's result, stop
    everything. ``uninvited``: also start that many SuperNodes whose keys nobody registered (a
    drill: the SuperLink must refuse them and the run go on; ``logs/uninvited-*.log``).
    ``drop``: (hospital index, round) for a ``DropDrill``."""
    from medpeft.federated.run import offline_env
    out = Path(cfg.out)
    env = {**os.environ, **offline_env(out)}
    # the SuperLink and SuperNodes start ``flower-superexec`` by name: this Python's scripts first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # Flower serves its runtime, control and fleet APIs over HTTPS on one port
    link_port, *node_ports = free_ports(1 + len(cfg.hospitals) + uninvited)
    names = [hospital_name(h, i) for i, h in enumerate(cfg.hospitals)]
    credentials = (hospital_credentials(cfg.tls, out / "credentials", names) if cfg.tls
                   else make_credentials(out / "credentials", names))
    write_connection(Path(env["FLWR_HOME"]), link_port, credentials.ca)
    app = write_app(out / "flwr-app", config_path)
    with Processes(env, out / "logs") as procs:
        link = procs.start("superlink", [
            _tool("flower-superlink"), "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(link_port),
            "--ssl-ca-certfile", str(credentials.ca), "--ssl-certfile", str(credentials.server_cert),
            "--ssl-keyfile", str(credentials.server_key), "--enable-supernode-auth"])
        wait_for_port(link_port, link, "flower-superlink")
        for name in names:
            register(env, credentials.public_key(name), name)

        def node(key: Path, i: int, port: int) -> list[str]:
            return _supernode(link_port, port, credentials, key,
                              f"partition-id={i} num-partitions={len(names)}", cfg.heartbeat_s)
        for i, (name, port) in enumerate(zip(names, node_ports)):
            procs.start(f"supernode-{i}", node(credentials.node_keys[name], i, port))
        for j, port in enumerate(node_ports[len(names):]):
            key = node_key_pair(out / "credentials" / "uninvited" / f"node{j}")
            procs.start(f"uninvited-{j}", node(key, j, port))
        drill = None
        if drop is not None:
            i, at_round = drop
            drill = DropDrill(procs, i, at_round,
                              partial(node, credentials.node_keys[names[i]], i), node_ports[i])
        submit = procs.start("flwr-run", [_tool("flwr"), "run", str(app), CONNECTION, "--stream"])
        wait_for_result(out, link, submit, drill, timeout)
        try:  # let the run end by itself (the ServerApp exits after writing its result)
            submit.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
