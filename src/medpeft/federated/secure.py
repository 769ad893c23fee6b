"""Secure aggregation: every training round runs Flower's SecAgg+ protocol, so that the server
only ever holds the weighted sum of the hospitals' tensors, never one hospital's update.

Flower implements SecAgg+ as a legacy workflow (``SecAggPlusWorkflow`` on the server,
``secaggplus_mod`` at each hospital) over the legacy FitIns / FitRes records. This module is the
bridge to medpeft's Message-API federation:

- down, the shared tensors travel as legacy parameters in the order of ``names`` (sent in the
  round's config); up, a hospital replies with a FitRes that ``secaggplus_mod`` masks and
  quantises before anything leaves the hospital (it clears the clear-text arrays);
- the workflow unmasks only the sum; the ``SumOnly`` strategy it then calls sees every result
  carrying that same aggregate, and checks so.

What composes: ``fedavg`` (A and B averaged separately) and ``ffa`` (FFA-LoRA: A frozen, so the
average of B is the exact average update). ``svd`` needs every hospital's own LoRA factors and is
refused. Federated SEA-PEFT composes too: its audits' utilities ride in the masked sum as two
more tensors (each utility where measured, and 1 where measured), whose summed ratio is the same
weighted mean of measured utilities the plain server pools.
Quantisation (Flower's): each value is clipped to +- ``clipping_range`` and quantised in steps of
2 x clipping_range / 2^22 (3.8e-6 at the default 8.0) after weighting; tested against the plain
weighted mean.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

log = logging.getLogger("medpeft.federated")
LEGACY_TRAIN = "fitins.parameters"  # the array record a SecAgg+ training message carries
SUMMED_UTILITY, MEASURED = "secagg.utility", "secagg.measured"  # SEA-PEFT's audits, masked too


@dataclass(frozen=True)
class SecureSettings:
    """``secure_aggregation: {threshold: 2, clipping_range: 8.0}`` (``true``: these defaults).
    threshold: how many hospitals must stay to unmask the sum (SecAgg+'s reconstruction
    threshold); clipping_range: every weighted value is clipped to +- this before quantisation."""
    threshold: int = 2
    clipping_range: float = 8.0

    @classmethod
    def from_setting(cls, setting: bool | dict) -> SecureSettings:
        raw = {} if setting is True else dict(setting)
        unknown = sorted(set(raw) - {"threshold", "clipping_range"})
        if unknown:
            raise ValueError(f"secure_aggregation: unknown keys {unknown}; known: "
                             "['clipping_range', 'threshold']")
        settings = cls(**raw)
        if not isinstance(settings.threshold, int) or settings.threshold < 2:
            raise ValueError(f"secure_aggregation threshold {settings.threshold}: must be an "
                             "integer >= 2 (SecAgg+ unmasks the sum only with that many hospitals)")
        if not settings.clipping_range > 0:
            raise ValueError(f"secure_aggregation clipping_range {settings.clipping_range}: must be > 0")
        return settings


class SumOnly(Strategy):
    """The legacy strategy SecAgg+ calls: it asks every connected hospital and receives only the
    unmasked aggregate (the same parameters in every result), which it keeps."""

    def __init__(self, shared: dict[str, torch.Tensor]):
        self.names = sorted(shared)
        self.dtypes = {n: t.dtype for n, t in shared.items()}  # SecAgg+ dequantises to float64
        self.aggregate: dict[str, torch.Tensor] | None = None
        self.results: list[FitRes] = []

    def configure_fit(self, server_round, parameters, client_manager):
        # legacy configs hold scalars only: the names travel as one line each
        config = {"server-round": server_round, "names": "\n".join(self.names)}
        return [(proxy, FitIns(parameters, config)) for proxy in client_manager.all().values()]

    def aggregate_fit(self, server_round, results, failures):
        self.results = [res for _, res in results]
        if not results:
            return None, {}
        first = results[0][1].parameters
        if any(res.parameters.tensors != first.tensors for _, res in results):
            raise RuntimeError("SecAgg+ handed the strategy differing parameters")
        arrays = parameters_to_ndarrays(first)
        self.aggregate = {n: torch.from_numpy(np.array(a)).to(self.dtypes[n])
                          for n, a in zip(self.names, arrays)}
        return first, {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def secure_train_round(grid: Grid, context: Context, shared: dict[str, torch.Tensor], *,
                       server_round: int, settings: SecureSettings, max_weight: float,
                       timeout: float) -> SumOnly:
    """One training round under SecAgg+; the returned strategy holds the aggregate (or None
    when too few hospitals stayed to unmask it) and the hospitals' clear-text metrics."""
    strategy = SumOnly(shared)
    manager = SimpleClientManager()
    for node_id in grid.get_node_ids():
        manager.register(GridClientProxy(node_id, grid, grid.run.run_id))
    legacy = LegacyContext(context, strategy=strategy, client_manager=manager)
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([shared[n].detach().cpu().numpy() for n in strategy.names]), True)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
    workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=settings.threshold,
                                  max_weight=max_weight, clipping_range=settings.clipping_range,
                                  timeout=timeout)
    workflow(grid, legacy)
    if strategy.aggregate is None:
        log.warning("round %s: SecAgg+ did not unmask an aggregate (fewer than %d hospitals "
                    "stayed); the global adapter is unchanged", server_round, settings.threshold)
    return strategy


TrainFn = Callable[[dict[str, torch.Tensor], int], tuple[dict[str, torch.Tensor], dict, int, str]]


def secure_train_reply(msg: Message, train: TrainFn) -> Message:
    """A hospital's reply to a SecAgg+ training message: a FitRes (``secaggplus_mod`` masks its
    parameters). ``train(tensors, server_round)`` -> (shared tensors, metrics, weight, name)."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    names = str(fitins.config["names"]).split("\n")
    arrays = parameters_to_ndarrays(fitins.parameters)
    tensors = {n: torch.from_numpy(np.array(a)) for n, a in zip(names, arrays)}
    shared, metrics, weight, name = train(tensors, int(fitins.config["server-round"]))
    parameters: Parameters = ndarrays_to_parameters([shared[n].detach().cpu().numpy() for n in names])
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    fitres = FitRes(Status(Code.OK, ""), parameters, weight, {**scalars, "site": name})
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


def utilities_to_tensors(utilities: list[float]) -> dict[str, torch.Tensor]:
    """A searched plan's audit utilities as tensors SecAgg+ can sum: the utility where this
    hospital measured it (0 elsewhere), and 1 where it did."""
    values = torch.tensor([float(u) for u in utilities], dtype=torch.float64)
    measured = torch.isfinite(values)
    return {SUMMED_UTILITY: torch.where(measured, values, 0.0).float(), MEASURED: measured.float()}


def adapter_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` without the room made for a searched plan's utilities."""
    return {n: t for n, t in tensors.items() if n not in (SUMMED_UTILITY, MEASURED)}


def utilities_from_aggregate(aggregate: dict[str, torch.Tensor]
                             ) -> tuple[dict[str, torch.Tensor], list[float]]:
    """(the adapter tensors, the pooled utilities) of a SecAgg+ aggregate. Both utility tensors
    are weighted means, so their ratio is the weighted mean over the hospitals that measured a
    candidate; NaN where none did (a count below half a quantisation-safe hospital share)."""
    tensors = adapter_tensors(aggregate)
    summed, measured = aggregate[SUMMED_UTILITY].double(), aggregate[MEASURED].double()
    return tensors, [float(s / m) if m > 1e-3 else float("nan") for s, m in zip(summed, measured)]


def is_secure_train(msg: Message) -> bool:
    return LEGACY_TRAIN in msg.content.array_records


def masked_bytes(reply: Message) -> int:
    """Bytes of the masked tensors a SecAgg+ reply carries in its config (0 for other replies)."""
    record = reply.content.config_records.get(RECORD_KEY_CONFIGS)
    if record is None or Key.MASKED_PARAMETERS not in record:
        return 0
    return sum(len(b) for b in record[Key.MASKED_PARAMETERS])


def secaggplus_when_asked(msg: Message, context: Context, call_next) -> Message:
    """Flower's ``secaggplus_mod`` for the messages of a SecAgg+ round; every other message
    (evaluation, rounds without secure aggregation) goes straight to the hospital's app (the
    mod itself refuses a training message without SecAgg+ settings)."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)
