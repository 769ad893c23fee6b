"""Flower ``ClientApp`` (one hospital) and ``ServerApp`` (rounds, strategy, global adapter).

What goes on the wire: down, the shared adapter tensors and the round's config; up, the hospital's
trained shared tensors, its number of support volumes (the FedAvg weight), its training loss
and its name. Tensors matching the federation's ``local`` patterns stay in the node's
``context.state``; the frozen foundation never leaves any checkpoint folder.

``client_app`` / ``server_app`` at module level read the federation YAML named by the run config
key ``medpeft-config`` (deployment: ``flwr run``); ``client_app_for`` / ``server_app_for`` take
any way of getting the config (the simulation passes the object itself).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from medpeft.federated.config import HOSPITALS, FedConfig, hospital_name, load_fed_config
from medpeft.federated.flows import flow_for
from medpeft.federated.hospital import Hospital
from medpeft.federated.sea_server import UTILITY
from medpeft.federated.secure import (
    adapter_tensors,
    is_secure_train,
    secaggplus_when_asked,
    secure_train_reply,
    utilities_to_tensors,
)
from medpeft.federated.server import run_federation
from medpeft.federated.strategy import WEIGHT, to_arrays, to_state

ConfigSource = Callable[[Context], FedConfig]


def hospital_for(cfg: FedConfig, context: Context) -> Hospital:
    """The hospital of this node: ``partition-id`` in its node config picks one of ``cfg.hospitals``."""
    pid = int(context.node_config.get("partition-id", -1))
    if not 0 <= pid < len(cfg.hospitals):
        raise ValueError(f"node config partition-id={pid}: the federation has "
                         f"{len(cfg.hospitals)} hospitals (0..{len(cfg.hospitals) - 1})")
    return Hospital(cfg, Path(cfg.out) / HOSPITALS / f"{hospital_name(cfg.hospitals[pid], pid)}.json")


def _reply(msg: Message, hospital: Hospital, metrics: dict, arrays: ArrayRecord | None = None) -> Message:
    content = RecordDict({"metrics": MetricRecord(metrics), "site": ConfigRecord({"site": hospital.name})})
    if arrays is not None:
        content["arrays"] = arrays
    return Message(content=content, reply_to=msg)


def hospital_train(msg: Message, context: Context, cfg: FedConfig) -> Message:
    """Local training from the global tensors; the reply carries only the shared tensors (and,
    for a searched plan, every candidate's utility)."""
    hospital = hospital_for(cfg, context)
    if is_secure_train(msg):  # SecAgg+: the reply is a FitRes that secaggplus_mod masks
        def train(tensors: dict, server_round: int) -> tuple[dict, dict, int, str]:
            shared, metrics = flow_for(cfg).train(hospital, adapter_tensors(tensors), context.state,
                                                  server_round)
            if UTILITY in metrics:  # a searched plan's audits: masked and summed with the tensors
                shared = {**shared, **utilities_to_tensors(metrics.pop(UTILITY))}
            return shared, metrics, hospital.n_support, hospital.name
        return secure_train_reply(msg, train)
    server_round = int(msg.content["config"]["server-round"])
    shared, metrics = flow_for(cfg).train(hospital, to_state(msg.content["arrays"]), context.state,
                                          server_round)
    return _reply(msg, hospital, {WEIGHT: hospital.n_support, **metrics}, to_arrays(shared))


def hospital_evaluate(msg: Message, context: Context, cfg: FedConfig) -> Message:
    """Dice of the global tensors (with this hospital's kept tensors) on the hospital's test volumes."""
    hospital = hospital_for(cfg, context)
    dice = flow_for(cfg).evaluate(hospital, to_state(msg.content["arrays"]), context.state)
    return _reply(msg, hospital, {"dice": dice, WEIGHT: len(hospital.split["test"])})


def client_app_for(config: ConfigSource) -> ClientApp:
    # Flower's secaggplus_mod runs SecAgg+'s stages and masks the training reply
    app = ClientApp(mods=[secaggplus_when_asked])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return hospital_train(msg, context, config(context))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return hospital_evaluate(msg, context, config(context))

    return app


def server_app_for(config: ConfigSource) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, config(context), context)

    return app


def _from_run_config(context: Context) -> FedConfig:
    path = context.run_config.get("medpeft-config")
    if not path:
        raise ValueError("run config has no 'medpeft-config' (the federation YAML's path)")
    return load_fed_config(path)


client_app = client_app_for(_from_run_config)
server_app = server_app_for(_from_run_config)
