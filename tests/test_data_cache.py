"""Preprocessed volumes cached on disk once, keyed by the preprocessing; worker processes load."""
from __future__ import annotations

from dataclasses import replace
from itertools import islice

from medpeft.data.msd import load_msd
from medpeft.data.ontology import class_mapping
from medpeft.data.transforms import Preprocessing, cache_key, cached_dataset, case_dicts
from medpeft.train.loop import batches


def test_disk_cache_is_written_once_keyed_by_preprocessing_and_feeds_workers(collection, tmp_path):
    ds = load_msd(collection / "Task02_Liver")
    mapping = class_mapping(ds.labels, ("liver",))
    items = case_dicts(ds, mapping)[:2]
    pp = Preprocessing()
    data = cached_dataset(items, pp, {ds.name: mapping}, cache_dir=tmp_path)
    folder = tmp_path / f"{ds.name}-{cache_key(pp, mapping)}"
    crop = data[0]
    files = sorted(folder.glob("*.pt"))
    assert len(files) == 1 and crop[0]["image"].shape[1:] == pp.patch  # written on first use
    stamp = files[0].stat().st_mtime_ns
    again = cached_dataset(items, pp, {ds.name: mapping}, cache_dir=tmp_path)
    again[0]
    assert files[0].stat().st_mtime_ns == stamp  # read back, not preprocessed again
    other = replace(pp, hu_window=(-200.0, 300.0))
    assert cache_key(other, mapping) != cache_key(pp, mapping)
    loaded = list(islice(batches(again, 1, seed=0, workers=2), 3))  # two loader processes
    assert all(b["image"].shape[2:] == pp.patch for b in loaded)
