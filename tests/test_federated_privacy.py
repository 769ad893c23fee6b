"""Hospital-level DP: every update a site sends is clipped to the bound, the server's noise has the
calibrated spread, and epsilon comes from Flower's RDP accountant."""
from __future__ import annotations

import pytest
import torch

from medpeft.federated.config import FedConfig, write_hospital_manifests
from medpeft.federated.hospital import Hospital, initial_state
from medpeft.federated.privacy import (
    DPSettings,
    add_noise,
    epsilon,
    noise_for_epsilon,
    noise_std,
    update_norm,
)
from medpeft.models.weights import shipped_foundation


def _cfg(collection, tmp_path, **kw) -> FedConfig:
    sites = [{"dataset": str(collection / "Task10_NewSite"), "k": 1, "n_test": 1, "part": [i, 2],
              "name": f"h{i}"} for i in range(2)]
    return FedConfig(foundation=str(shipped_foundation()), hospitals=sites, out=str(tmp_path),
                     plan="lora-everywhere", aggregation="ffa", rounds=1, local_steps=3,
                     **kw).check().resolved()


def test_every_update_a_site_sends_is_clipped_to_the_bound(collection, tmp_path):
    bound = 1e-3
    clipped = _cfg(collection, tmp_path / "dp", dp={"clipping_norm": bound,
                                                     "noise_multiplier": 1.0})
    plain = _cfg(collection, tmp_path / "plain")
    shared, kept = initial_state(plain)
    free = Hospital(plain, write_hospital_manifests(plain)[0]).train(shared, kept, 1)[0]
    sent = Hospital(clipped, write_hospital_manifests(clipped)[0]).train(shared, kept, 1)[0]
    assert update_norm(free, shared) > 10 * bound  # training moved further than the bound
    assert update_norm(sent, shared) <= bound  # on the tensors as sent, rounding included
    assert update_norm(sent, shared) > 0.9 * bound  # scaled down to it, not zeroed


def test_dp_settings_are_checked_by_name(collection, tmp_path):
    with pytest.raises(ValueError, match="clipping_norm is required"):
        _cfg(collection, tmp_path, dp={"noise_multiplier": 1.0})
    with pytest.raises(ValueError, match="use aggregation fedavg or ffa"):
        FedConfig(foundation="f", hospitals=[{"dataset": "d"}] * 2, aggregation="svd",
                  plan="lora-everywhere", server_lr=1.0,
                  dp={"clipping_norm": 1, "noise_multiplier": 1}).check()


def test_server_noise_spread_and_the_accountants_epsilon():
    settings = DPSettings(clipping_norm=0.5, noise_multiplier=2.0)
    std = noise_std(settings, [1.0, 1.0, 1.0, 1.0])
    assert std == pytest.approx(2.0 * 0.5 / 4)  # Flower's C z / n for uniform weights
    assert noise_std(settings, [3.0, 1.0]) == pytest.approx(2.0 * 0.5 * 0.75)  # heaviest site
    zeros = {"w": torch.zeros(200_000)}
    noisy = add_noise(zeros, std, seed=1)["w"]
    assert float(noisy.std()) == pytest.approx(std, rel=0.02)
    assert torch.equal(noisy, add_noise(zeros, std, seed=1)["w"])  # reproducible
    eps = [epsilon(DPSettings(1.0, z), rounds=3, hospitals=3) for z in (0.5, 1.0, 4.0)]
    assert eps[0] > eps[1] > eps[2] > 0
    z = noise_for_epsilon(8.0, rounds=3, hospitals=3)
    assert 7.5 < epsilon(DPSettings(1.0, z), rounds=3, hospitals=3) <= 8.0
