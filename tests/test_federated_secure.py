"""Secure aggregation (SecAgg+): the server holds only the sum of the hospitals' tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.clientapp import ClientApp
from flwr.common import parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from safetensors.torch import load_file

from medpeft.federated.config import FedConfig
from medpeft.federated.hospital import initial_state
from medpeft.models.weights import shipped_foundation


def _sites(collection, n: int) -> list[dict]:
    return [{"dataset": str(collection / "Task10_NewSite"), "k": 1 + i % 2, "n_test": 1,
             "part": [i, n]} for i in range(n)]


def test_secure_aggregation_hands_the_server_only_the_weighted_mean(collection, tmp_path, monkeypatch):
    """Three hospitals (weights 1, 2, 1), one SecAgg+ round: what the hospitals sent is recorded
    at the hospital, before secaggplus_mod masks it; the server's strategy only ever sees one
    aggregate, no hospital's own update, and it equals the plain weighted mean within SecAgg+'s
    quantisation error. With server_lr 2 the global adapter moves twice that mean's update (a
    server step needs only the sum)."""

    from medpeft.federated import secure
    from medpeft.federated.app import hospital_evaluate, hospital_train
    from medpeft.federated.run import federate
    cfg = FedConfig(foundation=str(shipped_foundation()), hospitals=_sites(collection, 3),
                    out=str(tmp_path / "fed"), plan="encoder-lora+head", rounds=1, local_steps=2,
                    aggregation="fedavg", secure_aggregation=True, min_hospitals=3,
                    baseline=False, pooled=False, simulation_workers=1, server_lr=2.0)
    sent: dict[str, tuple[list[np.ndarray], int]] = {}
    app = ClientApp(mods=[secure.secaggplus_when_asked])

    @app.train()
    def train(msg, context):
        reply = hospital_train(msg, context, cfg)
        fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
        # the hospitals run in Ray's worker processes: what each sent goes to a file
        np.savez(tmp_path / f"sent-{fitres.metrics['site']}.npz", *parameters_to_ndarrays(fitres.parameters),
                 weight=fitres.num_examples)
        return reply

    @app.evaluate()
    def evaluate(msg, context):
        return hospital_evaluate(msg, context, cfg)

    seen = []
    original = secure.SumOnly.aggregate_fit

    def spy(self, server_round, results, failures):
        seen.append([parameters_to_ndarrays(res.parameters) for _, res in results])
        return original(self, server_round, results, failures)

    monkeypatch.setattr(secure.SumOnly, "aggregate_fit", spy)
    report = federate(cfg, client_app=app)
    for path in sorted(tmp_path.glob("sent-*.npz")):
        with np.load(path) as z:
            sent[path.stem[5:]] = ([z[f"arr_{i}"] for i in range(len(z.files) - 1)], int(z["weight"]))
    assert sorted(sent) == ["site0", "site1", "site2"] and len(seen) == 1 and len(seen[0]) == 3
    weights = np.array([sent[s][1] for s in sorted(sent)], dtype=np.float64)
    assert weights.tolist() == [1, 2, 1]
    names = sorted(load_file(str(tmp_path / "fed" / "global" / "adapter.safetensors")))
    mean = [sum(w * sent[s][0][i].astype(np.float64) for w, s in zip(weights, sorted(sent)))
            / weights.sum() for i in range(len(sent["site0"][0]))]
    for got in seen[0]:  # every result the strategy was given carries the same aggregate
        assert all(np.array_equal(g, h) for g, h in zip(got, seen[0][0]))
    aggregate = seen[0][0]
    error = max(float(np.abs(a - m).max()) for a, m in zip(aggregate, mean))
    assert error < 2e-5  # quantisation steps of 3.8e-6, 3 hospitals
    for site in sent:  # no hospital's own update reached the strategy
        assert max(float(np.abs(a - u).max()) for a, u in zip(aggregate, sent[site][0])) > 1e-3
    saved = load_file(str(tmp_path / "fed" / "global" / "adapter.safetensors"))
    shared = sorted(set(saved) & set(report["wire_tensors"]))
    assert shared and len(shared) == len(aggregate)
    start = initial_state(cfg)[0]
    for name, value in zip(shared, aggregate):
        assert saved[name].dtype == torch.float32
        stepped = start[name].double() + 2 * (torch.from_numpy(value).double() - start[name].double())
        assert torch.allclose(saved[name].double(), stepped, atol=1e-6), name
    assert set(report["train"]["1"]) == {"site0", "site1", "site2"}
    assert names


def test_secure_aggregation_settings_are_checked_by_name(collection):
    base = dict(foundation="f", hospitals=_sites(collection, 2), plan="affine", aggregation="fedavg")
    with pytest.raises(ValueError, match="threshold 3 needs at least 3 hospitals"):
        FedConfig(**base, secure_aggregation={"threshold": 3}).check()
    with pytest.raises(ValueError, match="choose fedavg or ffa"):
        FedConfig(**{**base, "aggregation": "svd"}, secure_aggregation=True).check()
    with pytest.raises(ValueError, match="plan sea-peft: the server holds only the sum, so use "
                       "aggregation fedavg \\(got svd\\)"):
        FedConfig(**{**base, "aggregation": "svd", "plan": "sea-peft"}, server_lr=1.0,
                  secure_aggregation=True).check()
    with pytest.raises(ValueError, match="unknown keys \\['treshold'\\]"):
        FedConfig(**base, secure_aggregation={"treshold": 2}).check()
    hospitals3 = _sites(collection, 3)
    with pytest.raises(ValueError, match="min_hospitals 2 is below the secure_aggregation threshold 3"):
        FedConfig(**{**base, "hospitals": hospitals3}, secure_aggregation={"threshold": 3}).check()
    FedConfig(**{**base, "hospitals": hospitals3}, min_hospitals=3,
              secure_aggregation={"threshold": 3}).check()
