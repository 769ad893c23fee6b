"""One way through the code: every method name parses in one place and adapts through one entry."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import medpeft.pipelines as pipelines
from medpeft.experiments.cell import cached
from medpeft.methods.registry import BLACKBOX, SEARCHED, TUNE, resolve
from medpeft.pipelines import AdaptRequest, check


@pytest.mark.parametrize("name, base, family, init, kind", [
    ("decoder", "decoder", TUNE, "random", None),
    ("decoder@prototype", "decoder", TUNE, "prototype", None),
    ("head@random", "head", TUNE, "random", None),
    ("lora+affine", "lora+affine", TUNE, "random", None),
    ("scratch", "scratch", TUNE, "random", None),
    ("sea-peft", "sea-peft", SEARCHED, "random", None),
    ("blackbox-spatial", "blackbox-spatial", BLACKBOX, "prototype", "spatial"),
    ("blackbox-spatial@random", "blackbox-spatial", BLACKBOX, "random", "spatial"),
])
def test_resolve_parses_every_family(name, base, family, init, kind):
    spec = resolve(name)
    assert (spec.name, spec.base, spec.family, spec.head_init, spec.blackbox_kind) == \
        (name, base, family, init, kind)
    assert spec.is_peer == (base == "scratch")


def test_resolve_names_what_exists():
    with pytest.raises(ValueError, match="blackbox-spatial1") as err:
        resolve("lorra")
    assert "decoder" in str(err.value) and "sea-peft" in str(err.value)
    with pytest.raises(ValueError, match="after '@'"):
        resolve("head@zeros")
    with pytest.raises(ValueError, match="unknown black-box method"):
        resolve("blackbox-cubic")


def _request(method: str, **settings) -> AdaptRequest:
    return AdaptRequest(Path("f"), Path("m.json"), method, Path("out"), **settings)


def test_check_refuses_settings_a_family_cannot_honour(tmp_path):
    with pytest.raises(ValueError, match="black-box adapters"):
        check(_request("lora", unlabelled=(Path("scan.nii.gz"),)))
    with pytest.raises(ValueError, match="not available with sea-peft"):
        check(_request("sea-peft", organs=("spleen",)))
    with pytest.raises(ValueError, match="SEA-PEFT settings"):
        check(_request("decoder", sea={"budget": 0.01}))
    with pytest.raises(ValueError, match="no such manifest"):  # then the manifest, which must exist
        check(_request("sea-peft", organs=("all",), sea={"budget": 0.01}))
    manifest = tmp_path / "m.json"
    manifest.write_text('{"dataset": "d", "support": ["a"], "test": ["b"]}')
    assert check(replace(_request("sea-peft", organs=("all",), sea={"budget": 0.01}),
                         manifest=manifest)).family == SEARCHED


def test_adapt_routes_each_family_to_its_flow(monkeypatch, tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"dataset": "d", "support": ["a", "b"], "test": ["c"]}))
    calls = {}

    def flow(name):
        def run(*args, **kwargs):
            calls[name] = (args, kwargs)
            return {"seconds": 0.0}
        return run
    for name in ("tune", "sea_adapt", "blackbox_adapt"):
        monkeypatch.setattr(pipelines, name, flow(name))
    pipelines.adapt(AdaptRequest(tmp_path, manifest, "head@random", tmp_path / "h", steps=7,
                                 options={"x": 1}))
    args, kwargs = calls.pop("tune")
    assert args[2] == "head" and kwargs["head_init"] == "random" and kwargs["steps"] == 7
    assert kwargs["options"] == {"x": 1}
    pipelines.adapt(AdaptRequest(tmp_path, manifest, "sea-peft", tmp_path / "s", seed=3,
                                 sea={"budget": 123}))
    args, kwargs = calls.pop("sea_adapt")
    assert args[3].budget == 123 and args[3].seed == 3 and args[3].steps == 160  # K=2 schedule
    assert kwargs["steps"] is None and kwargs["lr"] is None  # the refine takes tune's for K
    pipelines.adapt(AdaptRequest(tmp_path, manifest, "blackbox-linear", tmp_path / "b"))
    assert calls.pop("blackbox_adapt")[1]["kind"] == "linear"
    assert not calls


def test_a_cached_cell_is_computed_once_and_read_back(tmp_path):
    runs = []

    def compute():
        runs.append(1)
        return {"dice": 0.5, "organs": {"liver": 0.9}}
    first = cached(tmp_path / "cell" / "result.json", compute)
    again = cached(tmp_path / "cell" / "result.json", compute)
    assert first == again == {"dice": 0.5, "organs": {"liver": 0.9}} and len(runs) == 1
    assert [p.name for p in (tmp_path / "cell").iterdir()] == ["result.json"]  # no temp file left

    def crash():
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        cached(tmp_path / "other" / "result.json", crash)
    assert not (tmp_path / "other" / "result.json").exists()  # nothing half-written is kept


def test_a_finished_adaptation_is_not_trained_again_on_resume(monkeypatch, tmp_path):
    """A run cut off after training (while scoring) resumes without retraining; any other
    request for the folder, or a run without resume, trains."""
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"dataset": "d", "support": ["a"], "test": ["c"]}))
    runs = []

    def tune(*args, **kwargs):
        runs.append(kwargs["steps"])
        return {"seconds": 12.5, "loss": 0.25}
    monkeypatch.setattr(pipelines, "tune", tune)
    request = AdaptRequest(tmp_path, manifest, "decoder", tmp_path / "cell", steps=5)
    first = pipelines.adapt(request)
    again = pipelines.adapt(replace(request, resume=True))
    assert runs == [5] and again == first == {"seconds": 12.5, "loss": 0.25}
    pipelines.adapt(replace(request, resume=True, steps=6))  # another request: trains
    assert runs == [5, 6]
    default = replace(request, steps=None, out=tmp_path / "by-default")
    pipelines.adapt(default)
    pipelines.adapt(replace(default, resume=True))  # the same defaults: read back
    assert runs == [5, 6, None]
    monkeypatch.setattr(pipelines, "adapt_steps", lambda method, shots: 999)  # a new release's
    pipelines.adapt(replace(default, resume=True))  # defaults: the finished run does not answer
    assert runs == [5, 6, None, None]
    monkeypatch.setattr(pipelines, "background_offset", lambda method, shots: 2.0)
    pipelines.adapt(replace(default, resume=True))  # nor does one finished without the offset
    assert runs == [5, 6, None, None, None]
    pipelines.adapt(request)  # no resume: trains
    assert runs == [5, 6, None, None, None, 5]
