"""benchmarks/foundation_soup.py mixes two foundations' weights and writes loadable foundations."""
from __future__ import annotations

import sys

import pytest
import torch
from conftest import benchmark_script

from medpeft.models.weights import load_foundation, save_foundation


def test_mix_interpolates_floats_keeps_index_tables_and_refuses_other_keys():
    mix = benchmark_script("foundation_soup").mix_state
    a = {"w": torch.zeros(3), "index": torch.arange(3)}
    b = {"w": torch.full((3,), 2.0), "index": torch.arange(3) + 7}
    assert torch.equal(mix(a, b, 0.25)["w"], torch.full((3,), 0.5))
    assert torch.equal(mix(a, b, 1.5)["w"], torch.full((3,), 3.0))  # past B along B - A
    assert torch.equal(mix(a, b, 0.5)["index"], torch.arange(3))
    with pytest.raises(ValueError, match="differ in keys"):
        mix(a, {"w": b["w"]}, 0.5)


def test_soup_folder_is_a_foundation_between_its_two_parents(foundation_dir, tmp_path, monkeypatch):
    base = load_foundation(foundation_dir)
    original = {name: value.clone() for name, value in base.model.state_dict().items()}
    moved_names = {name for name, _ in base.model.named_parameters()}
    with torch.no_grad():
        for p in base.model.parameters():
            p.add_(1.0)
    moved = save_foundation(tmp_path / "moved", base.model, base.backbone, base.classes,
                            pp=base.preprocessing)
    monkeypatch.setattr(sys, "argv", ["foundation_soup.py", str(foundation_dir), str(moved),
                                      "--alpha", "0.5", "--out", str(tmp_path / "soups")])
    benchmark_script("foundation_soup").main()
    soup = load_foundation(tmp_path / "soups" / "soup-50").model.state_dict()  # checks the hash
    for name, value in original.items():
        torch.testing.assert_close(soup[name], value + 0.5 if name in moved_names else value)
