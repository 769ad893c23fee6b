from __future__ import annotations

import re

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
    for k in (0, -1):  # not "too many": too few
        with pytest.raises(ValueError, match=f"K={k}: adaptation needs at least 1 labelled support"):
            make_split(ds, k, seed=0, n_test=3)


@pytest.mark.parametrize("text, says", [
    ("{", "not a manifest (not JSON"),
    ("[1, 2]", "not a manifest (expected an object"),
    ('{"support": ["a"], "test": ["b"]}', "no 'dataset' entry"),
    ('{"dataset": "d", "support": "a", "test": ["b"]}', "'support' must be a list of case names"),
    ('{"dataset": "d", "support": [], "test": ["b"]}', "no support volume listed"),
    ('{"dataset": "d", "support": ["a", "b"], "test": ["b"]}', "b both in support and test"),
])
def test_a_bad_manifest_is_named_with_what_is_wrong(tmp_path, text, says):
    path = tmp_path / "manifest.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"manifest.json: .*{re.escape(says)}"):
        read_manifest(path)


def test_a_missing_manifest_is_named_with_how_to_write_one(tmp_path):
    with pytest.raises(ValueError, match=r"nope.json: no such manifest \(write one with medpeft split\)"):
        read_manifest(tmp_path / "nope.json")


def test_adapt_refuses_a_bad_manifest_by_name_before_writing(tmp_path):
    from typer.testing import CliRunner

    from medpeft.cli import app
    from medpeft.models.weights import shipped_foundation
    (tmp_path / "m.json").write_text('{"bad": 1}')
    result = CliRunner().invoke(app, ["adapt", "--foundation", str(shipped_foundation()),
                                      "--manifest", str(tmp_path / "m.json"), "--out",
                                      str(tmp_path / "out")], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "m.json: manifest has no 'dataset' entry" in result.output
    assert not (tmp_path / "out").exists()


def test_unmodelled_labels_are_the_ones_that_become_background():
    from medpeft.data.ontology import unmodelled_labels
    labels = {0: "background", 1: "liver", 2: "Right Kidney", 7: "gallbladder", 9: "tumour"}
    assert unmodelled_labels(labels, ("liver", "kidney_right", "spleen")) == ["gallbladder", "tumour"]
    assert unmodelled_labels(labels, ("liver", "kidney_right", "gallbladder")) == ["tumour"]


def test_adapt_names_the_support_labels_it_will_not_learn(collection, tmp_path):
    """A gallbladder labelled in the support volumes is background to the default task: the user
    is told so, and how to learn it; naming the organs with --organ is the user's own choice."""
    from typer.testing import CliRunner

    from medpeft.cli import app
    from medpeft.data.msd import load_msd
    from medpeft.models.weights import shipped_foundation
    from medpeft.pipelines import AdaptRequest, unlearnt_labels
    target = load_msd(collection / "Task10_NewSite")
    assert "gallbladder" in target.labels.values()
    manifest = write_manifest(tmp_path / "k1.json", make_split(target, 1, seed=0, n_test=1))
    base = shipped_foundation()
    request = AdaptRequest(base, manifest, "lora", tmp_path / "a")
    assert unlearnt_labels(request) == ["gallbladder"]
    assert unlearnt_labels(AdaptRequest(base, manifest, "lora", tmp_path / "a",
                                        organs=("liver", "gallbladder"))) == []
    result = CliRunner().invoke(app, ["adapt", "--foundation", str(base), "--manifest", str(manifest),
                                      "--method", "lora", "--steps", "1", "--out",
                                      str(tmp_path / "lora")], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "not learnt (the foundation does not segment them" in result.output
    assert "background): gallbladder. To learn them" in result.output
