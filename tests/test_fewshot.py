from __future__ import annotations

import pytest

from medpeft.data.fewshot import make_split, read_manifest, write_manifest
from medpeft.data.msd import load_msd


def test_split_is_deterministic_and_test_set_is_fixed(collection, tmp_path):
    ds = load_msd(collection / "Task10_NewSite")
    a, b = make_split(ds, 3, seed=1, n_test=3), make_split(ds, 3, seed=1, n_test=3)
    assert a == b
    other_seed, other_k = make_split(ds, 3, seed=2, n_test=3), make_split(ds, 1, seed=1, n_test=3)
    assert a["test"] == other_seed["test"] == other_k["test"]
    assert not set(a["support"]) & set(a["test"]) and len(a["support"]) == 3
    path = write_manifest(tmp_path / "m.json", a)
    assert read_manifest(path) == a


def test_too_many_shots_is_a_clear_error(collection):
    ds = load_msd(collection / "Task10_NewSite")
    with pytest.raises(ValueError, match="K=9"):
        make_split(ds, 9, seed=0, n_test=3)
