"""The three adaptation flows behind one entry point, :func:`adapt`.

- whole-model tuning (``tune``): presets, adapter kinds and the from-scratch peer, one loop;
- SEA-PEFT (``sea``): search the adapter sites under a budget, then refine them with ``tune``;
- black-box (``blackbox``): a head on a sealed service's cached features.

The method's family (:func:`medpeft.methods.registry.resolve`) picks the flow; the CLI, the demo,
the benchmark grid and the benchmarks all adapt through :func:`adapt`.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from medpeft.data.augment import AUGMENTATIONS
from medpeft.data.fewshot import read_manifest
from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import unmodelled_labels
from medpeft.io import write_json
from medpeft.methods import ADAPT_STEPS, adapt_steps, background_offset, group_rates
from medpeft.methods.blackbox.service import load_service
from medpeft.methods.registry import BLACKBOX, SEARCHED, TUNE, MethodSpec, resolve
from medpeft.methods.sea.loop import sea_config
from medpeft.models.weights import describe_foundation
from medpeft.pipelines.blackbox import blackbox_adapt
from medpeft.pipelines.request import AdaptRequest
from medpeft.pipelines.sea import sea_adapt
from medpeft.pipelines.tune import adapt as tune
from medpeft.progress import Reporter
from medpeft.train import distributed

__all__ = ["AdaptRequest", "adapt", "check", "unlearnt_labels"]

FINISHED = "adapt_summary.json"  # the request and its summary, once the adapter is saved


def check(request: AdaptRequest) -> MethodSpec:
    """The request's method, parsed; a ValueError for settings its family cannot honour or a
    manifest that cannot be read, before any work."""
    spec = resolve(request.method)
    if request.augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation --augment {request.augment!r}; choose from "
                         f"{', '.join(AUGMENTATIONS)}")
    if spec.family != BLACKBOX and (request.unlabelled or request.blackbox):
        raise ValueError("transductive adaptation and --blackbox run on black-box adapters "
                         "(their whole-volume features are cached once): use --method "
                         "blackbox-spatial or blackbox-linear")
    if spec.family == SEARCHED and request.organs not in ((), ("all",)):
        raise ValueError("--organ is not available with sea-peft yet: its search ranks the "
                         "foundation's own classes; use a fixed method (decoder, head, lora, ...)")
    if spec.family != TUNE and distributed.launched():
        raise ValueError(f"{request.method} trains in one process (its search or feature cache "
                         "is not sharded): run it without torchrun")
    if spec.family != SEARCHED and (request.sea or request.audit_volume):
        raise ValueError(f"SEA-PEFT settings were given to {request.method}: use --method sea-peft")
    read_manifest(request.manifest)
    return spec


def unlearnt_labels(request: AdaptRequest) -> list[str]:
    """Labels of the support set that the adapter will treat as background: organs the
    foundation does not segment, when the request names no organs (``--organ`` chooses them)."""
    if request.organs:
        return []
    labels = read_dataset(read_manifest(request.manifest)["dataset"]).labels
    return unmodelled_labels(labels, describe_foundation(request.foundation).classes)


def adapt(request: AdaptRequest, progress: Reporter | None = None) -> dict:
    """Run the request's flow; the adapter lands in ``request.out``. Returns the training summary
    (``seconds`` included). With ``resume``, a folder whose adaptation finished for the same
    request is not trained again (e.g. a run cut off while it scored the adapter)."""
    spec = check(request)
    finished, asked = Path(request.out) / FINISHED, _as_record(request, spec)
    if request.resume and finished.is_file():
        record = json.loads(finished.read_text())
        if record.get("request") == asked:
            return record["summary"]
    summary = _run(spec, request, progress)
    if distributed.is_main():  # written last: the adapter beside it is complete
        write_json(finished, {"request": asked, "summary": summary})
    return summary


def _as_record(request: AdaptRequest, spec: MethodSpec) -> dict:
    """The request as JSON, less ``resume`` (a finished run answers a resumed one), with the steps
    and rates its defaults stand for: a run finished under other defaults does not answer it."""
    record = json.loads(json.dumps({**asdict(request), "resume": None}, default=str))
    if spec.family in (TUNE, SEARCHED):
        shots = _support_count(request.manifest)
        record["defaults"] = {"steps": adapt_steps(spec.base, shots),
                              "lr": group_rates(spec.base, request.lr, shots=shots,
                                                 steps=request.steps)}
        offset = background_offset(spec.base, shots)
        if offset:  # only for method and K it may apply to (tune skips binary tasks): others stand
            record["defaults"]["background_offset"] = offset
    return record


def _support_count(manifest: Path) -> int:
    """K: how many support volumes the manifest lists."""
    return len(read_manifest(manifest)["support"])


def _run(spec: MethodSpec, request: AdaptRequest, progress: Reporter | None) -> dict:
    if spec.family == SEARCHED:
        k = _support_count(request.manifest)
        return sea_adapt(request.foundation, request.manifest, request.out,
                         sea_config(k, seed=request.seed, **request.sea),
                         steps=request.steps, lr=request.lr,
                         audit_volume=request.audit_volume, resume=request.resume,
                         bf16=request.bf16, augment=request.augment, progress=progress)
    if spec.family == BLACKBOX:
        return blackbox_adapt(request.foundation, request.manifest, request.out,
                              kind=spec.blackbox_kind, init=spec.head_init, organs=request.organs,
                              steps=ADAPT_STEPS if request.steps is None else request.steps,
                              seed=request.seed,
                              service=load_service(request.blackbox) if request.blackbox else None,
                              unlabelled=request.unlabelled, gamma=request.gamma,
                              patience=request.patience, resume=request.resume, progress=progress)
    return tune(request.foundation, request.manifest, spec.base, request.out,
                options=request.options, steps=request.steps, lr=request.lr, seed=request.seed,
                resume=request.resume, organs=request.organs, head_init=spec.head_init,
                patience=request.patience, progress=progress, bf16=request.bf16,
                grad_checkpoint=request.grad_checkpoint, augment=request.augment)
