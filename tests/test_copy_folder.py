"""copy_folder: the foundation cache's copy of the shipped weights is whole or absent, and two
benchmark processes that start together both get it (they once raced: FileExistsError)."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from medpeft import io
from medpeft.io import copy_folder


def _source(tmp_path):
    src = tmp_path / "shipped"
    (src / "sub").mkdir(parents=True)
    (src / "foundation.json").write_text('{"v": 8}')
    (src / "foundation.safetensors").write_bytes(bytes(range(256)) * 400)
    (src / "sub" / "recipe.yaml").write_text("steps: 1\n")
    return src


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_copies_whole_and_concurrent_copies_all_succeed(tmp_path):
    src = _source(tmp_path)
    dest = tmp_path / "cache" / "foundation-x"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: copy_folder(src, dest), range(4)))  # none raises
    assert _files(dest) == _files(src)
    assert dest.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in dest.parent.iterdir()) == ["foundation-x"]  # no temp left
    copy_folder(src, dest)  # an existing whole copy is kept, not an error
    assert _files(dest) == _files(src)


def test_a_crash_mid_copy_leaves_no_folder(tmp_path, monkeypatch):
    src = _source(tmp_path)
    dest = tmp_path / "cache" / "foundation-x"

    def half_copy(source, target, **kwargs):
        target.mkdir(exist_ok=True)
        shutil.copyfile(source / "foundation.json", target / "foundation.json")
        raise OSError("disk full")
    monkeypatch.setattr(io.shutil, "copytree", half_copy)
    with pytest.raises(OSError, match="disk full"):
        copy_folder(src, dest)
    assert list(dest.parent.iterdir()) == []  # neither a partial dest nor a temp folder
