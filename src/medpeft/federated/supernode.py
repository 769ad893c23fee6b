"""Start a Flower SuperNode that announces its own heartbeat interval.

In Flower's protocol each SuperNode tells the SuperLink its heartbeat interval (on activation and
with every heartbeat; the SuperLink accepts ``HEARTBEAT_MIN_INTERVAL`` to ``HEARTBEAT_MAX_INTERVAL``,
10 to 1,800 s in Flower 1.42) and is marked offline after ``HEARTBEAT_PATIENCE`` (2) intervals
without one. ``flower-supernode`` always announces ``HEARTBEAT_DEFAULT_INTERVAL`` (30 s) and has no
option for it, so a hospital that dies is noticed only after up to 60 s, and only then may it
rejoin with its key. This entry point sets the interval the SuperNode announces and sends at, then
runs ``flower-supernode`` itself.

Usage: ``python -m medpeft.federated.supernode HEARTBEAT_S [flower-supernode options...]``
"""
from __future__ import annotations

import sys

# the two modules that read the interval in the SuperNode process: what it announces (fleet
# connection) and how often it sends (heartbeat sender)
_READERS = ("flwr.supernode.fleet_http_connection", "flwr.supercore.heartbeat")


def announce(interval_s: float) -> None:
    """Make this process's SuperNode announce (and keep) ``interval_s``; refuse what the SuperLink
    would refuse, and a Flower whose SuperNode no longer reads the interval where we set it."""
    import importlib

    import flwr
    from flwr.common import constant
    low, high = constant.HEARTBEAT_MIN_INTERVAL, constant.HEARTBEAT_MAX_INTERVAL
    if not low <= interval_s <= high:
        raise ValueError(f"heartbeat_s {interval_s:g}: Flower's SuperLink accepts {low} to {high} s")
    for name in _READERS:
        module = importlib.import_module(name)
        if not hasattr(module, "HEARTBEAT_DEFAULT_INTERVAL"):
            raise RuntimeError(f"Flower {flwr.__version__}: {name} no longer reads "
                               "HEARTBEAT_DEFAULT_INTERVAL; leave heartbeat_s at 30")
        module.HEARTBEAT_DEFAULT_INTERVAL = interval_s


def main(argv: list[str]) -> None:
    from flwr.supernode.cli import flower_supernode
    announce(float(argv[0]))
    sys.argv = ["flower-supernode", *argv[1:]]
    flower_supernode()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
