"""The embedded phantom CT collection, written as Medical Segmentation Decathlon folders.

Source datasets are *partially labelled* (each labels a subset of organs, under its own names
and values, one even merging both kidneys) and come from different sites, as public collections
do. A held-out source dataset measures in-domain Dice; the target dataset is a new hospital with
an arterial-phase, low-dose, thick-slice protocol: the domain shift that few-shot adaptation fixes.
The gallbladder is labelled only at the target: it is a *novel* organ for the foundation model.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medpeft.data.ontology import ORGAN_ID, ORGANS, resolve
from medpeft.data.phantom.scanner import Scanner, acquire
from medpeft.io import save_nifti, write_json
from medpeft.progress import Reporter

# The organs the phantom draws: the first eleven of the ontology (its later entries are not drawn).
PHANTOM_ORGANS: tuple[str, ...] = ORGANS[:11]

GENERATOR_VERSION = 2

# Source sites scan with intravenous contrast, as most public CT collections do; they differ in
# phase timing, dose, kernel, calibration, spacing, orientation and field of view.
HOSPITAL_A = Scanner("hospital-a-portal", "portal-venous", 12.0, 1.2, (3.0, 3.0, 3.0))
HOSPITAL_B = Scanner("hospital-b-late-arterial", "arterial", 10.0, 1.6, (3.4, 3.4, 4.0),
                  hu_offset=-5.0, orientation="LPS")
HOSPITAL_C = Scanner("hospital-c-sharp", "portal-venous", 18.0, 0.7, (3.0, 3.0, 3.0),
                  hu_scale=1.03, orientation="LAS")
HOSPITAL_D = Scanner("hospital-d-thick", "portal-venous", 14.0, 1.2, (3.5, 3.5, 4.5), hu_offset=5.0)
HOSPITAL_E = Scanner("hospital-e-lowdose", "portal-venous", 20.0, 1.0, (3.5, 3.5, 3.0),
                  orientation="LPS", z_range=(-225.0, 120.0))
# The new hospital: a low-dose, thick-slice protocol without intravenous contrast but with
# positive oral contrast in stomach and bowel, stored LPS, patients placed off-centre.
NEW_SITE = Scanner("new-hospital-noncontrast", "non-contrast", 24.0, 0.7, (3.6, 3.6, 5.0),
                hu_offset=12.0, orientation="LPS", shift_mm=18.0, z_range=(-210.0, 140.0),
                oral_contrast=True)


@dataclass(frozen=True)
class DatasetSpec:
    """One MSD task folder: a site, the label names it annotates (value = position + 1), a size."""

    name: str
    site: Scanner
    labels: tuple[str, ...]
    n_cases: int
    role: str  # "source" (pre-training), "source-holdout" or "target"


def collection_specs(size: str = "demo") -> list[DatasetSpec]:
    """The datasets of the phantom collection; ``size`` is "demo" or "tiny" (tests)."""
    counts = {"demo": (8, 6, 6, 6, 6, 4, 6, 16), "tiny": (4, 2, 2, 2, 2, 2, 2, 8)}
    if size not in counts:
        raise ValueError(f"unknown collection size {size!r}; choose from {sorted(counts)}")
    n = counts[size]
    multi = ("liver", "spleen", "right_kidney", "left_kidney", "stomach", "pancreas", "aorta", "ivc")
    return [
        DatasetSpec("Task01_AbdomenMulti", HOSPITAL_A, multi, n[0], "source"),
        DatasetSpec("Task02_Liver", HOSPITAL_B, ("liver",), n[1], "source"),
        DatasetSpec("Task03_Kidney", HOSPITAL_C, ("kidney",), n[2], "source"),
        DatasetSpec("Task04_Spleen", HOSPITAL_D, ("spleen",), n[3], "source"),
        DatasetSpec("Task05_SpinePelvis", HOSPITAL_E,
                    ("vertebrae", "urinary_bladder", "aorta", "inferior_vena_cava"), n[4], "source"),
        DatasetSpec("Task06_SourceHoldout", HOSPITAL_A, PHANTOM_ORGANS, n[5], "source-holdout"),
        DatasetSpec("Task07_Pancreas", HOSPITAL_C, ("pancreas",), n[6], "source"),
        DatasetSpec("Task10_NewSite", NEW_SITE, PHANTOM_ORGANS, n[7], "target"),
    ]


def case_seed(seed: int, dataset_index: int, case_index: int) -> int:
    return int(np.random.SeedSequence([seed, dataset_index, case_index]).generate_state(1)[0])


def local_labels(canonical: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Re-express canonical organ ids in a dataset's own label values (unlisted organs -> 0)."""
    out = np.zeros_like(canonical)
    for value, name in enumerate(names, start=1):
        ids = [ORGAN_ID[o] for o in resolve(name)]
        out[np.isin(canonical, ids)] = value
    return out


def _write_case(job: tuple[Path, DatasetSpec, int, int]) -> dict:
    folder, spec, index, seed = job
    image, canonical, affine = acquire(spec.site, seed)
    stem = f"{spec.name.split('_', 1)[1].lower()}_{index:03d}.nii.gz"
    save_nifti(folder / "imagesTr" / stem, image, affine)
    save_nifti(folder / "labelsTr" / stem, local_labels(canonical, spec.labels), affine)
    return {"image": f"./imagesTr/{stem}", "label": f"./labelsTr/{stem}"}


def spec_hash(specs: list[DatasetSpec], seed: int, roles: tuple[str, ...] | None = None) -> str:
    """Fingerprint of what :func:`write_collection` writes for ``specs`` (optionally only the
    datasets with one of ``roles``; positions count, as they seed the cases). It hashes the specs'
    field values, not their Python names, so that renaming a class keeps every cache and every
    shipped foundation's recipe valid."""
    text = json.dumps([[i, asdict(s)] for i, s in enumerate(specs) if roles is None or s.role in roles]
                      + [seed, GENERATOR_VERSION], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_hash(size: str, seed: int) -> str:
    """Fingerprint of the pre-training (source) datasets only: what a foundation model depends on."""
    return spec_hash(collection_specs(size), seed, roles=("source",))


def write_collection(root: str | Path, size: str = "demo", seed: int = 0, workers: int = 2,
                     *, progress: Reporter | None = None) -> Path:
    """Write (or reuse, when already complete) the phantom collection under ``root``.

    Returns the path of ``collection.json``, which lists the datasets and their roles.
    """
    root = Path(root)
    specs = collection_specs(size)
    digest = spec_hash(specs, seed)
    index_path = root / "collection.json"
    if index_path.exists() and json.loads(index_path.read_text()).get("hash") == digest:
        return index_path
    jobs = [(root / s.name, s, i, case_seed(seed, d, i))
            for d, s in enumerate(specs) for i in range(s.n_cases)]
    task = progress.add_task("phantom CT", total=len(jobs)) if progress else None
    results: list[dict] = []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for entry in pool.map(_write_case, jobs):
            results.append(entry)
            if progress:
                progress.advance(task)
    entries = iter(results)
    for spec in specs:
        training = [next(entries) for _ in range(spec.n_cases)]
        write_json(root / spec.name / "dataset.json", {
            "name": spec.name,
            "description": f"medpeft phantom CT, site {spec.site.name}",
            "modality": {"0": "CT"},
            "labels": {"0": "background", **{str(v): n for v, n in enumerate(spec.labels, 1)}},
            "numTraining": spec.n_cases,
            "training": training,
            "test": [],
            "medpeft": {"site": spec.site.to_dict(), "role": spec.role, "seed": seed},
        })
    write_json(index_path, {
        "hash": digest, "source_hash": source_hash(size, seed), "seed": seed, "size": size,
        "generator_version": GENERATOR_VERSION,
        "datasets": [{"name": s.name, "role": s.role, "site": s.site.name} for s in specs],
    })
    return index_path
