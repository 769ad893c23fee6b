"""`medpeft demo` cut off part-way loses no finished work: a re-run reads finished cells back, does
not retrain an adapter whose scoring was cut off, and reuses the pre-trained foundation."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import pytest
from conftest import measured_federated_schedules
from rich.console import Console

import medpeft.pipelines as pipelines
from medpeft.experiments import demo
from medpeft.experiments.demo_config import Continuation, DemoConfig
from medpeft.models.weights import load_foundation, shipped_foundation


def _tiny(**overrides) -> DemoConfig:
    return DemoConfig(size="tiny", pretrain_steps=4, adapt_steps=3, shots=(1,), workers=1,
                           methods=("head",), only_at={"scratch": ()}, n_test=1,
                           federated_rounds=0, continued=(), **overrides)


def test_demo_resumes_without_redoing_finished_work(collection, tmp_path, monkeypatch):
    out, cache, quiet = tmp_path / "demo", tmp_path / "cache", Console(file=open(os.devnull, "w"))
    cache.mkdir()
    (cache / "phantom-tiny-s0").symlink_to(collection)  # the session's tiny phantom, complete
    monkeypatch.setattr(demo, "pretrain", lambda sources, fdir, *a, **k: shutil.copytree(
        shipped_foundation(), fdir))  # the shipped foundation stands in for pre-training
    real_score = demo.score_model

    def killed_while_scoring_the_adapter(*args, **kwargs):
        if str(kwargs.get("desc", "")).startswith("evaluate head"):
            raise KeyboardInterrupt("killed")
        return real_score(*args, **kwargs)
    monkeypatch.setattr(demo, "score_model", killed_while_scoring_the_adapter)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(out, cache, _tiny(), console=quiet)
    assert (out / "k1" / "head" / "adapter_config.json").is_file()
    assert not (out / "k1" / "head" / "result.json").exists()

    def refuse(*args, **kwargs):
        raise AssertionError("finished work was done again")
    monkeypatch.setattr(demo, "score_model", real_score)
    monkeypatch.setattr(pipelines, "tune", refuse)  # the adapter is complete: no retraining
    monkeypatch.setattr(demo, "pretrain", refuse)  # the foundation is cached
    records = demo.run_demo(out, cache, _tiny(), console=quiet)
    head = next(r for r in records if r["method"] == "head")
    assert 0.0 <= head["mean_dice"] <= 1.0 and head["seconds"] > 0
    assert json.loads((out / "k1" / "head" / "result.json").read_text()) == head

    monkeypatch.setattr(demo, "_adapted_record", refuse)  # a finished cell is read back
    again = demo.run_demo(out, cache, _tiny(), console=quiet)
    assert next(r for r in again if r["method"] == "head") == head


def test_demo_pretraining_runs_every_stage_of_the_shipped_recipe(tmp_path, monkeypatch):
    """`--retrain` re-makes the shipped foundation: the first stage, then each continuation from
    the previous stage's weights, on its ROI and its number of collections; a finished stage is
    not trained again."""
    calls, asked = [], []

    def fake_pretrain(sources, fdir, backbone, pp=None, **kwargs):
        calls.append((fdir, pp, sources, kwargs))
        shutil.copytree(shipped_foundation(), fdir)
    monkeypatch.setattr(demo, "pretrain", fake_pretrain)
    cfg = DemoConfig(retrain=True)
    quiet = Console(file=open(os.devnull, "w"))
    sources = lambda n: (asked.append(n), [f"collections-{n}"])[1]  # noqa: E731
    demo._provide_foundation(tmp_path / "f", {"r": 1}, sources, cfg, progress=None, console=quiet)
    assert len(calls) == 1 + len(cfg.continued) == 5 and asked == [1, 1, 8, 8, 8]
    (first, pp1, _, k1), (second, pp2, _, k2), (third, pp3, src3, k3), (fourth, pp4, _, k4), \
        (final, pp5, _, k5) = calls
    assert final == tmp_path / "f" and k1.get("init") is None
    assert k2["init"] == first and k3["init"] == second and src3 == ["collections-8"]
    assert k4["init"] == third and k5["init"] == fourth
    assert (k1["loop"].steps, k1["augment"]) == (cfg.pretrain_steps, cfg.pretrain_augment)
    assert (k2["loop"].steps, k2["loop"].lr, k2["augment"]) == (1600, 5e-4, "contrast-shape")
    assert k3["loop"].steps == 3200 and pp1 is None and pp2 is None
    assert pp3.patch == (64, 64, 64) and pp3.spacing == (5.0, 5.0, 5.0)
    # the last two hold the spleen steady on the previous stage's ROI, the second with seed 2
    assert (k4["augment"], k4["steady_organs"], k4["loop"].seed) == \
        ("contrast-strong-shape", ("spleen",), 0) and pp4 is None and pp5 is None
    assert (k5["steady_organs"], k5["loop"].seed, k5["loop"].steps) == (("spleen",), 2, 1600)
    assert k5["recipe"] == {"r": 1} and all(k.get("recipe") is None for k in (k1, k2, k3, k4))
    shutil.rmtree(final)
    demo._provide_foundation(tmp_path / "f", {"r": 1}, sources, cfg, progress=None, console=quiet)
    assert len(calls) == 6 and calls[5][0] == final  # the earlier stages are reused


def test_a_stage_passes_its_steady_organs_and_seed_and_older_recipes_stay_the_same(tmp_path,
                                                                                    monkeypatch):
    """A continuation's steady organs and draw seed reach its pre-training and its recipe; a stage
    without them keeps the recipe keys foundations were made with, so the shipped one still
    matches its recipe and is not pre-trained again."""
    calls = []
    monkeypatch.setattr(demo, "pretrain", lambda sources, fdir, backbone, pp=None, **kw: (
        calls.append(kw), shutil.copytree(shipped_foundation(), fdir)))
    late = Continuation(100, augment="contrast-strong-shape", steady_organs=("spleen",), draw_seed=2)
    cfg = DemoConfig(retrain=True, continued=(Continuation(100), late))
    quiet = Console(file=open(os.devnull, "w"))
    demo._provide_foundation(tmp_path / "f", {}, lambda n: [], cfg, progress=None, console=quiet)
    (_, plain, held) = calls
    assert plain["steady_organs"] == () and plain["loop"].seed == cfg.seed == 0
    assert held["steady_organs"] == ("spleen",) and held["loop"].seed == 2
    assert set(Continuation(100).to_recipe()) == {"steps", "lr", "augment", "patch", "collections"}
    assert late.to_recipe()["steady_organs"] == ["spleen"] and late.to_recipe()["draw_seed"] == 2


def test_a_cached_copy_of_the_shipped_weights_takes_the_shipped_metadata(tmp_path, monkeypatch):
    """A demo cache made by an older release holds the same weights with older settings (before
    `adaptation.crop`): it takes the shipped `foundation.json`; other weights keep their own."""
    monkeypatch.setattr(demo, "pretrain", lambda *a, **k: pytest.fail("the cache was not reused"))
    quiet, shipped = Console(file=open(os.devnull, "w")), shipped_foundation()
    stale, other = tmp_path / "stale", tmp_path / "other"
    for fdir, sha in ((stale, None), (other, "0" * 64)):
        shutil.copytree(shipped, fdir)
        meta = json.loads((fdir / "foundation.json").read_text())
        meta.pop("adaptation")
        meta["sha256"] = sha or meta["sha256"]
        (fdir / "foundation.json").write_text(json.dumps(meta))
        demo._provide_foundation(fdir, {}, list, DemoConfig(), progress=None, console=quiet)
    assert (stale / "foundation.json").read_bytes() == (shipped / "foundation.json").read_bytes()
    assert load_foundation(stale).adapt_crop == (64, 64, 32)
    assert "adaptation" not in json.loads((other / "foundation.json").read_text())


def test_demo_cells_side_by_side_give_the_records_of_one_after_the_other(collection, tmp_path,
                                                                          monkeypatch):
    """Two workers (the cell and the zero-shot scores in their own processes): the records come
    back in the demo's order (the zero-shot rows first, then the cell), the cell's kept in its
    folder for a re-run to read back."""
    out, cache, quiet = tmp_path / "demo", tmp_path / "cache", Console(file=open(os.devnull, "w"))
    cache.mkdir()
    (cache / "phantom-tiny-s0").symlink_to(collection)
    monkeypatch.setattr(demo, "pretrain", lambda sources, fdir, *a, **k: shutil.copytree(
        shipped_foundation(), fdir))
    records = demo.run_demo(out, cache, replace(_tiny(), workers=2), console=quiet)
    assert [(r["method"], r["k"]) for r in records] == [("foundation", 0), ("zero-shot", 0),
                                                        ("head", 1)]
    assert json.loads((out / "k1" / "head" / "result.json").read_text()) == records[2]
    assert (out / "zero-shot" / "predictions").is_dir() and (out / "report.md").is_file()


def test_a_finished_federation_is_reused_however_many_simulation_workers_ran_it(collection,
                                                                                tmp_path,
                                                                                monkeypatch):
    """Side by side the demo's federation runs on one simulation worker, alone on every core:
    a finished run is read back either way, and run again only when what it computes changed."""
    from medpeft.federated import demo as fed_demo
    cfg = fed_demo.demo_federation_config(collection / "Task10_NewSite", shipped_foundation(),
                                          tmp_path / "fed", 3, plan="affine", steps=10,
                                          server_lr=1.5, seed=0)
    out = tmp_path / "fed"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"finished": True}))
    (out / "demo-settings.json").write_text(json.dumps(replace(cfg, simulation_workers=1).to_dict()))
    ran = []
    monkeypatch.setattr(fed_demo, "federate", lambda c: ran.append(c) or {"finished": False})
    assert fed_demo.demo_federation(replace(cfg, simulation_workers=0)) == {"finished": True}
    assert fed_demo.demo_federation(replace(cfg, rounds=2)) == {"finished": False} and len(ran) == 1


def test_the_demos_federation_is_the_best_measured_schedule_it_can_afford(collection, tmp_path):
    """The demo federates the steps table's plan (affine; federate's SEA-PEFT took the demo to
    9:44) with `medpeft federate`'s aggregation, on the schedule (local steps, server step) with
    the best federated Dice in the v8 steps table among those shorter than federate's default
    (which takes the demo past 10 minutes), and that schedule gains over training alone; it
    evaluates only the two rounds its table shows. Left unset, each setting is federate's."""
    from medpeft.federated import demo as fed_demo
    from medpeft.federated.config import FedConfig
    # every measured schedule has 3 rounds, the demo's: keyed by (local steps, server step)
    measured = {schedule[1:]: dice for schedule, dice in measured_federated_schedules().items()
                if schedule[0] == 3}
    default = FedConfig(foundation="f", hospitals=[{"dataset": "d"}])
    affordable = {key: dice for key, dice in measured.items() if key[0] < default.local_steps}
    best = max(affordable, key=lambda key: affordable[key][0])
    cfg = DemoConfig()
    args = (collection / "Task10_NewSite", shipped_foundation(), tmp_path / "fed", 3)
    fed = fed_demo.demo_federation_config(*args, plan=cfg.federated_plan,
                                          steps=cfg.federated_steps,
                                          server_lr=cfg.federated_server_lr, seed=0)
    assert (fed.local_steps, fed.server_lr) == best and measured[best][1] > 0
    assert (fed.plan, fed.aggregation) == ("affine", default.aggregation)  # the table's plan
    assert fed.evaluated_rounds() == {0, 3} and not fed.pooled
    assert (default.local_steps, default.server_lr) in measured  # federate's default, measured
    plain = fed_demo.demo_federation_config(*args, plan=None, steps=None, server_lr=None, seed=0)
    assert (plain.plan, plain.local_steps, plain.server_lr) == (
        default.plan, default.local_steps, default.server_lr)
