"""What a federation plan does at the server and at a hospital, one class per kind of plan.

A ``FixedFlow`` trains and averages the same tensors every round (some may stay at each hospital:
``local``); a ``SearchFlow`` (SEA-PEFT) sends the current active set with every candidate's
audited utility, and the server re-chooses the set. ``flow_for`` is the one place that picks by
the kind of plan: the apps, the server and the report call a flow, never test a plan's name.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from flwr.app import ConfigRecord, RecordDict

from medpeft.federated.accounting import Ledger
from medpeft.federated.config import FedConfig
from medpeft.federated.hospital import Hospital, PooledHospitals, build_model, initial_state, load_tensors
from medpeft.federated.plans import SearchedPlan, fed_sea_config, plan_named
from medpeft.federated.privacy import DPSettings
from medpeft.federated.sea_hospital import sea_evaluate, sea_train
from medpeft.federated.sea_server import UTILITY, FederatedSearch, SeaFedAvg, save_sea_adapter, search_alone
from medpeft.federated.strategy import AdapterFedAvg, to_arrays, to_state
from medpeft.methods.adapter_io import save_adapter

KEPT = "kept"  # a hospital's tensors that never travel, between rounds (node state)
MEMORY = "sea-memory"  # a sea-peft hospital's smoother and last active set, between rounds


class Flow(Protocol):
    """What the server, the hospital app and the report ask of a plan."""

    def strategy(self, cfg: FedConfig, ledger: Ledger, **nodes) -> tuple[AdapterFedAvg, dict]: ...

    def train(self, hospital: Hospital, tensors: dict, state: RecordDict, server_round: int
              ) -> tuple[dict, dict]: ...

    def evaluate(self, hospital: Hospital, tensors: dict, state: RecordDict) -> float: ...

    def save_global(self, folder: Path, cfg: FedConfig, strategy: AdapterFedAvg, final: dict,
                    extra: dict) -> dict: ...

    def local_only(self, cfg: FedConfig, manifests: list[Path]) -> dict[str, float]: ...

    def pooled_bound(self, cfg: FedConfig, manifests: list[Path]) -> dict[str, float]: ...


class FixedFlow:
    """Every round trains the plan's tensors; those matching ``local`` stay at the hospital."""

    def strategy(self, cfg: FedConfig, ledger: Ledger, **nodes) -> tuple[AdapterFedAvg, dict]:
        """The server's strategy and the tensors the first round sends."""
        shared, _ = initial_state(cfg)
        dp = DPSettings.from_dict(cfg.dp) if cfg.dp else None
        return AdapterFedAvg(shared, ledger, cfg.aggregation, dp=dp, seed=cfg.seed,
                             server_lr=cfg.server_lr, **nodes), shared

    def train(self, hospital: Hospital, tensors: dict, state: RecordDict, server_round: int
              ) -> tuple[dict, dict]:
        """One round at ``hospital``: (tensors to send, metrics to send); kept tensors go to ``state``."""
        shared, kept, metrics = hospital.train(tensors, _kept(state, hospital), server_round)
        if kept:
            state[KEPT] = to_arrays(kept)
        return shared, metrics

    def evaluate(self, hospital: Hospital, tensors: dict, state: RecordDict) -> float:
        return hospital.evaluate(tensors, _kept(state, hospital))

    def save_global(self, folder: Path, cfg: FedConfig, strategy: AdapterFedAvg, final: dict,
                    extra: dict) -> dict:
        """Write the global adapter; returns what the server's summary adds."""
        foundation, state = build_model(cfg, for_saving=True)
        load_tensors(foundation.model, final, "global adapter")
        save_adapter(folder, foundation.model, state, foundation,
                     extra={**extra, "local_patterns": cfg.local})
        return {}

    def local_only(self, cfg: FedConfig, manifests: list[Path]) -> dict[str, float]:
        """Each hospital alone: the federation's rounds of ``Hospital.train`` (a fresh optimizer,
        warm-up and cosine cycle each round, the same per-round seeds), without averaging."""
        start = initial_state(cfg)
        scores = {}
        for manifest in manifests:
            hospital = Hospital(cfg, manifest)
            shared, kept = _rounds(hospital, cfg, *start)
            scores[hospital.name] = hospital.evaluate(shared, kept, save_personal=False)
        return scores

    def pooled_bound(self, cfg: FedConfig, manifests: list[Path]) -> dict[str, float]:
        """One model trained on all hospitals' support volumes together, in the federation's
        rounds with as many steps per round as all take together, scored at each hospital."""
        hospitals = [Hospital(cfg, m) for m in manifests]
        shared, kept = _rounds(PooledHospitals(cfg, hospitals), cfg, *initial_state(cfg),
                               steps=len(hospitals) * cfg.local_steps)
        return {hospital.name: hospital.evaluate(shared, kept, save_personal=False) for hospital in hospitals}


class SearchFlow:
    """SEA-PEFT: the message's tensors are the active set, re-chosen by the server each round."""

    def strategy(self, cfg: FedConfig, ledger: Ledger, **nodes) -> tuple[SeaFedAvg, dict]:
        strategy = SeaFedAvg(FederatedSearch(cfg.seed, cfg.foundation, fed_sea_config(cfg.sea)),
                             ledger, cfg.aggregation, server_lr=cfg.server_lr, **nodes)
        return strategy, strategy.search.wire()

    def train(self, hospital: Hospital, tensors: dict, state: RecordDict, server_round: int
              ) -> tuple[dict, dict]:
        """Train the active set; the metrics carry every candidate's smoothed utility."""
        memory = json.loads(state[MEMORY]["json"]) if MEMORY in state.config_records else {}
        shared, utilities, memory, metrics = sea_train(hospital, tensors, memory, server_round,
                                                       sea=fed_sea_config(hospital.cfg.sea))
        state[MEMORY] = ConfigRecord({"json": json.dumps(memory)})
        return shared, {UTILITY: utilities, **metrics}

    def evaluate(self, hospital: Hospital, tensors: dict, state: RecordDict) -> float:
        return sea_evaluate(hospital, tensors)

    def save_global(self, folder: Path, cfg: FedConfig, strategy: SeaFedAvg, final: dict,
                    extra: dict) -> dict:
        save_sea_adapter(folder, cfg, strategy.search, extra)
        return {"sea": strategy.search.summary()}

    def local_only(self, cfg: FedConfig, manifests: list[Path]) -> dict[str, float]:
        """Each hospital runs the same rounds of train, audit and allocate, alone."""
        return {hospital.name: search_alone(hospital, cfg.rounds)
                for hospital in (Hospital(cfg, m) for m in manifests)}

    def pooled_bound(self, cfg: FedConfig, manifests: list[Path]) -> dict[str, float]:
        """Not defined for a searched plan (empty)."""
        return {}


def flow_for(cfg: FedConfig) -> Flow:
    return SearchFlow() if isinstance(plan_named(cfg.plan), SearchedPlan) else FixedFlow()


def _kept(state: RecordDict, hospital: Hospital) -> dict:
    """The hospital's kept tensors: from the node's state, or, for a SuperNode that restarted
    (its state is gone), from the personalised adapter it saved at its last evaluation."""
    return to_state(state[KEPT]) if KEPT in state.array_records else hospital.saved_kept()


def _rounds(hospital: Hospital, cfg: FedConfig, shared: dict, kept: dict, *, steps: int | None = None
            ) -> tuple[dict, dict]:
    for server_round in range(1, cfg.rounds + 1):
        shared, kept, _ = hospital.train(shared, kept, server_round, steps=steps)
    return shared, kept
