"""The server's strategy: Flower's FedAvg, made safe for adapters and honest about bytes.

- Every reply is checked against the global tensors (same names, same shapes, finite values, a
  positive weight). A hospital that crashed or sent a bad update is named in the log and in the
  report, and left out of this round's average; the other hospitals' work is kept.
- Aggregation: weighted FedAvg, with LoRA pairs averaged exactly (see ``aggregation``).
- Every message's content is weighed into a ``Ledger``.
Hospitals name themselves in a ``ConfigRecord`` of each reply ("site"); the server maps node ids to
those names so that a hospital whose reply is an error is still named.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection, Iterable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from medpeft.federated.accounting import Ledger
from medpeft.federated.aggregation import aggregate_states
from medpeft.federated.privacy import DPSettings, add_noise, noise_std

log = logging.getLogger("medpeft.federated")
WEIGHT = "num-examples"


def to_state(arrays: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v.numpy())) for k, v in arrays.items()}


def to_arrays(state: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in state.items()})


def metrics_of(msg: Message) -> MetricRecord:
    """The (first) metric record of a reply."""
    return next(iter(msg.content.metric_records.values()))


def sender(reply: Message, sent: list[Message]) -> int:
    """The node a reply stands for: Flower's own error replies (a SuperNode offline) come from
    the SuperLink and name the message they answer."""
    if reply.metadata.src_node_id != SUPERLINK_NODE_ID:
        return reply.metadata.src_node_id
    return next((m.metadata.dst_node_id for m in sent
                 if m.metadata.message_id == reply.metadata.reply_to_message_id),
                reply.metadata.src_node_id)


def connected_within(grid: Grid, wanted: int, timeout: float) -> int:
    """How many hospitals are connected once ``wanted`` are, or when ``timeout`` s have passed
    (Flower's own waits have no end)."""
    deadline = time.monotonic() + timeout
    while (connected := len(list(grid.get_node_ids()))) < wanted and time.monotonic() <= deadline:
        time.sleep(1.0)
    return connected


class AdapterFedAvg(FedAvg):
    """FedAvg over adapter tensors with per-reply checks, LoRA-exact averaging and a ledger."""

    def __init__(self, reference: dict[str, torch.Tensor], ledger: Ledger, mode: str = "svd",
                 dp: DPSettings | None = None, *, seed: int = 0, server_lr: float = 1.0,
                 evaluated_rounds: Collection[int] | None = None, quorum_timeout_s: float = 3600.0,
                 **kwargs):
        super().__init__(weighted_by_key=WEIGHT, **kwargs)
        self.quorum_timeout_s = quorum_timeout_s  # Flower's own wait for min_available_nodes is endless
        self.server_lr = server_lr  # FedOpt: the global tensors move by server_lr x the mean update
        self.previous: dict[str, torch.Tensor] = {}  # the global tensors the round started from
        self.evaluated_rounds = evaluated_rounds  # None: every round
        self.shapes = {k: tuple(v.shape) for k, v in reference.items()}
        self.ledger, self.mode = ledger, mode
        self.dp, self.seed = dp, seed  # dp: Gaussian noise on every aggregate (privacy.py)
        self.hospitals: dict[int, str] = {}  # node id -> hospital name
        self.excluded: list[dict] = []
        self.dice: dict[int, dict[str, float]] = {}  # round -> hospital -> Dice
        self.train_metrics: dict[int, dict[str, dict]] = {}
        self.wire_names: set[str] = set()  # every tensor name any message carried, either way
        self.sent: dict[tuple[int, str], list[Message]] = {}  # (round, phase) -> sent, unanswered

    def hospital(self, node_id: int) -> str:
        return self.hospitals.get(node_id, f"node {node_id}")

    def learn_names(self, replies: Iterable[Message]) -> None:
        for msg in replies:
            if not msg.has_error():
                for record in msg.content.config_records.values():
                    if "site" in record:
                        self.hospitals[msg.metadata.src_node_id] = str(record["site"])

    def weigh_out(self, server_round: int, messages: Iterable[Message], phase: str) -> list[Message]:
        messages = list(messages)
        self.sent[(server_round, phase)] = messages
        for msg in messages:
            self.ledger.record(server_round, msg.metadata.dst_node_id, phase, "down", content=msg.content)
            self.note_names(msg)
        return messages

    def wait_for_quorum(self, server_round: int, grid: Grid) -> None:
        """Wait at most ``quorum_timeout_s`` for ``min_available_nodes`` connected hospitals, then
        fail by name: a hospital that dropped out and never came back must not hang the server."""
        connected = connected_within(grid, self.min_available_nodes, self.quorum_timeout_s)
        if connected < self.min_available_nodes:
            raise RuntimeError(
                f"round {server_round}: {connected} hospital(s) connected after waiting "
                f"{self.quorum_timeout_s:.0f} s, fewer than min_hospitals "
                f"({self.min_available_nodes}); the rounds before it are in the log")

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.wait_for_quorum(server_round, grid)
        self.previous = to_state(arrays) if self.server_lr != 1 else {}
        return self.weigh_out(server_round, super().configure_train(server_round, arrays, config,
                                                                     grid), "train")

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if self.evaluated_rounds is not None and server_round not in self.evaluated_rounds:
            return self.weigh_out(server_round, [], "evaluate")  # nobody is asked, nobody missed
        self.wait_for_quorum(server_round, grid)
        return self.weigh_out(server_round, super().configure_evaluate(server_round, arrays,
                                                                        config, grid), "evaluate")

    def note_names(self, msg: Message) -> None:
        for record in msg.content.array_records.values():
            self.wire_names.update(record.keys())

    def problem(self, msg: Message, with_arrays: bool) -> str | None:
        """Why a reply cannot be used, or None."""
        if msg.has_error():
            if msg.error.code == ErrorCode.NODE_UNAVAILABLE:
                return "dropped out: its SuperNode went offline during the round"
            return f"the hospital failed: {msg.error.reason}"
        content = msg.content
        metrics = [m for m in content.metric_records.values() if WEIGHT in m]
        if not metrics or not isinstance(metrics[0][WEIGHT], (int, float)) \
                or not metrics[0][WEIGHT] > 0:
            return f"no positive '{WEIGHT}' metric"
        if not with_arrays:
            return None
        if len(content.array_records) != 1:
            return f"expected one ArrayRecord, got {len(content.array_records)}"
        arrays = next(iter(content.array_records.values()))
        names = set(arrays.keys())
        if names != set(self.shapes):
            extra, missing = sorted(names - set(self.shapes)), sorted(set(self.shapes) - names)
            return f"tensor names differ (unexpected {extra[:3]}, missing {missing[:3]})"
        for name, value in arrays.items():
            if tuple(value.shape) != self.shapes[name]:
                return f"{name} has shape {tuple(value.shape)}, expected {self.shapes[name]}"
            if not np.isfinite(value.numpy()).all():
                return f"{name} holds NaN or infinite values"
        return None

    def usable(self, server_round: int, replies: Iterable[Message], phase: str) -> list[Message]:
        replies = list(replies)
        self.learn_names(replies)
        good = []
        sent = self.sent.pop((server_round, phase), [])
        senders = [sender(msg, sent) for msg in replies]
        for node in sorted({m.metadata.dst_node_id for m in sent} - set(senders)):
            self.leave_out(server_round, phase, self.hospital(node), "dropped out: no reply within "
                           "the round's timeout (round_timeout_s)")
        for msg, node in zip(replies, senders):
            hospital = self.hospital(node)
            if not msg.has_error():
                self.ledger.record(server_round, msg.metadata.src_node_id, phase, "up", content=msg.content)
                self.note_names(msg)
            reason = self.problem(msg, with_arrays=phase == "train")
            if reason is None:
                good.append(msg)
                continue
            self.leave_out(server_round, phase, hospital, reason)
        return good

    def leave_out(self, server_round: int, phase: str, hospital: str, reason: str) -> None:
        self.excluded.append({"round": server_round, "site": hospital, "phase": phase,
                              "reason": reason})
        log.warning("round %s %s: %s left out: %s", server_round, phase, hospital, reason)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        good = self.usable(server_round, replies, "train")
        if not good:
            log.warning("round %s: no usable update; the global adapter is unchanged", server_round)
            return None, None
        return self.merge(server_round, good)

    def merge(self, server_round: int, good: list[Message]) -> tuple[ArrayRecord, MetricRecord]:
        """The weighted aggregate of usable train replies and their mean training loss."""
        weights = [float(metrics_of(m)[WEIGHT]) for m in good]
        states = [to_state(next(iter(m.content.array_records.values()))) for m in good]
        merged = self.server_step(self.previous, self.noised(
            aggregate_states(states, weights, self.mode), weights, server_round))
        self.train_metrics[server_round] = {
            self.hospital(m.metadata.src_node_id): {k: v for k, v in metrics_of(m).items()
                                                 if not isinstance(v, list)} for m in good}
        total = sum(weights)
        loss = sum(w * float(metrics_of(m).get("train-loss", 0.0))
                   for w, m in zip(weights, good)) / total
        return to_arrays(merged), MetricRecord({"train-loss": loss, "sites": len(good)})

    def secure_wire(self, shared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What a SecAgg+ round sends and sums: the shared tensors."""
        return shared

    def secure_aggregate(self, aggregate: dict[str, torch.Tensor], weights: list[float],
                         server_round: int, *, start: dict[str, torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
        """The next shared tensors from a SecAgg+ round's unmasked weighted mean and the tensors
        the round started from (the server step's origin)."""
        return self.server_step(start, self.noised(aggregate, weights, server_round))

    def server_step(self, previous: dict[str, torch.Tensor], merged: dict[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        """previous + server_lr x (merged - previous), tensor by tensor (FedOpt's server step;
        the identity at server_lr 1). Works on the sum SecAgg+ reveals: it needs no hospital's
        own update."""
        if self.server_lr == 1:
            return merged
        return {n: (previous[n].double() + self.server_lr * (m.double() - previous[n].double())
                    ).to(m.dtype) for n, m in merged.items()}

    def noised(self, merged: dict[str, torch.Tensor], weights: list[float], server_round: int
               ) -> dict[str, torch.Tensor]:
        """The aggregate with the DP Gaussian noise of the round added (unchanged without dp)."""
        if self.dp is None:
            return merged
        return add_noise(merged, noise_std(self.dp, weights), self.seed * 1000 + server_round)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        good = self.usable(server_round, replies, "evaluate")
        return self.record_dice(server_round, good)

    def record_dice(self, server_round: int, good: list[Message]) -> MetricRecord | None:
        if not good:
            return None
        scores = {self.hospital(m.metadata.src_node_id): float(metrics_of(m)["dice"]) for m in good}
        self.dice[server_round] = scores
        finite = [d for d in scores.values() if not math.isnan(d)]
        return MetricRecord({"dice": sum(finite) / len(finite) if finite else float("nan")})
