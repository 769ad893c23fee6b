"""The server's side of a federation: round 0 evaluation, the rounds, the saved global adapter.

Writes ``out/global/`` (an adapter artefact like any other, with the federation in its config)
and ``out/server.json`` (per-hospital Dice per round, left-out replies, the byte ledger).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid

from medpeft.federated.accounting import Ledger, arrays_bytes
from medpeft.federated.config import FedConfig
from medpeft.federated.flows import flow_for
from medpeft.federated.privacy import ACCOUNTANT, DPSettings, epsilon
from medpeft.federated.secure import SecureSettings, masked_bytes, secure_train_round
from medpeft.federated.strategy import AdapterFedAvg, connected_within, to_arrays, to_state
from medpeft.io import write_json
from medpeft.models.weights import load_foundation

JOIN_TIMEOUT_S = 300.0  # how long round 0 waits for every listed hospital to connect
log = logging.getLogger("medpeft.federated")


def full_model_bytes(cfg: FedConfig) -> int:
    """Serialised size of every weight of the backbone (what full fine-tuning sends)."""
    model = load_foundation(cfg.foundation).model
    return arrays_bytes(to_arrays(dict(model.named_parameters())))


def wait_for_hospitals(grid: Grid, cfg: FedConfig, timeout: float = JOIN_TIMEOUT_S) -> int:
    """Wait until every listed hospital is connected, at most ``timeout`` s; go on with fewer
    only if ``cfg.min_hospitals`` are (a site that joins late takes part from its next round)."""
    connected = connected_within(grid, len(cfg.hospitals), timeout)
    if connected < cfg.min_hospitals:
        raise RuntimeError(f"{connected} of {len(cfg.hospitals)} hospitals connected "
                           f"within {timeout:.0f} s; min_hospitals is {cfg.min_hospitals}")
    if connected < len(cfg.hospitals):
        log.warning("starting with %d of %d hospitals connected", connected, len(cfg.hospitals))
    return connected


class MeteredGrid:
    """The grid SecAgg+ talks through, weighing every message of its four stages into the ledger."""

    def __init__(self, grid: Grid, ledger: Ledger):
        self.grid, self.ledger, self.server_round = grid, ledger, 0

    def __getattr__(self, name: str):
        return getattr(self.grid, name)

    def send_and_receive(self, messages, *, timeout: float | None = None):
        messages = list(messages)
        for msg in messages:
            self.ledger.record(self.server_round, msg.metadata.dst_node_id, "train", "down",
                               content=msg.content)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for msg in replies:
            if not msg.has_error():
                self.ledger.record(self.server_round, msg.metadata.src_node_id, "train", "up",
                                   content=msg.content, masked=masked_bytes(msg))
        return replies


def secure_rounds(grid: Grid, context: Context, cfg: FedConfig, strategy: AdapterFedAvg,
                  shared: dict) -> dict:
    """``cfg.rounds`` rounds whose training runs SecAgg+ (the evaluation as usual); the final
    shared tensors."""
    settings = SecureSettings.from_setting(cfg.secure_aggregation)
    metered = MeteredGrid(grid, strategy.ledger)
    max_weight = float(max(int(h.get("k", 5)) for h in cfg.hospitals))  # FedAvg weights <= 1
    for server_round in range(1, cfg.rounds + 1):
        metered.server_round = server_round
        result = secure_train_round(metered, context, strategy.secure_wire(shared),
                                    server_round=server_round,
                                    settings=settings, max_weight=max_weight,
                                    timeout=cfg.round_timeout_s)
        if result.aggregate is not None:
            weights = [float(res.num_examples) for res in result.results]
            shared = strategy.secure_aggregate(result.aggregate, weights, server_round,
                                               start=shared)
            strategy.train_metrics[server_round] = {
                str(res.metrics["site"]): {k: v for k, v in res.metrics.items() if k != "site"}
                for res in result.results}
        replies = grid.send_and_receive(strategy.configure_evaluate(
            server_round, to_arrays(shared), ConfigRecord(), grid), timeout=cfg.round_timeout_s)
        strategy.aggregate_evaluate(server_round, replies)
    return shared


def run_federation(grid: Grid, cfg: FedConfig, context: Context) -> dict:
    """Evaluate the starting adapter at every hospital, run ``cfg.rounds`` rounds, save the result."""
    out = Path(cfg.out)
    ledger = Ledger(full_model_bytes(cfg))
    quorum = cfg.min_hospitals  # every connected hospital is asked; a round waits for this many
    nodes = dict(fraction_train=1.0, fraction_evaluate=1.0, min_available_nodes=quorum,
                 min_train_nodes=quorum, min_evaluate_nodes=quorum,
                 evaluated_rounds=cfg.evaluated_rounds(), quorum_timeout_s=cfg.round_timeout_s)
    flow = flow_for(cfg)
    strategy, shared = flow.strategy(cfg, ledger, **nodes)
    arrays = to_arrays(shared)
    t0 = time.perf_counter()
    wait_for_hospitals(grid, cfg)
    before = grid.send_and_receive(strategy.configure_evaluate(0, arrays, ConfigRecord(), grid),
                                   timeout=cfg.round_timeout_s)
    strategy.aggregate_evaluate(0, before)
    if cfg.secure_aggregation:
        final = secure_rounds(grid, context, cfg, strategy, shared)
    else:
        result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=cfg.rounds,
                                timeout=cfg.round_timeout_s)
        final = to_state(result.arrays) if result.arrays is not None else shared
    strategy.ledger.name_hospitals(strategy.hospitals)
    summary = {"rounds": cfg.rounds, "plan": cfg.plan, "aggregation": cfg.aggregation,
               "sites": sorted(strategy.hospitals.values()), "seconds": time.perf_counter() - t0,
               "dice": {str(r): d for r, d in strategy.dice.items()},
               "train": {str(r): m for r, m in strategy.train_metrics.items()},
               "excluded": strategy.excluded, "bytes": strategy.ledger.rows,
               "bytes_per_round": strategy.ledger.per_round(),
               "bytes_total": strategy.ledger.totals(),
               "shared_tensors": sorted(shared), "wire_tensors": sorted(strategy.wire_names)}
    if cfg.dp:
        dp = DPSettings.from_dict(cfg.dp)
        summary["dp"] = {**cfg.dp, "delta": dp.delta, "accountant": ACCOUNTANT,
                         "epsilon": epsilon(dp, cfg.rounds, len(cfg.hospitals))}
    extra = {"federation": {k: summary[k] for k in ("rounds", "plan", "aggregation", "sites")}}
    summary.update(flow.save_global(out / "global", cfg, strategy, final, extra))
    write_json(out / "server.json", summary)
    return summary
