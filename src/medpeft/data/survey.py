"""What is in a dataset folder: layout, volumes, geometry, organs, label coverage, every problem.

``survey`` reads every header and (unless ``read_labels=False``) every label volume once, and
collects problems instead of stopping at the first, so a user fixes a folder in one pass.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from medpeft.data.msd import MSDDataset, check_case
from medpeft.data.ontology import resolve
from medpeft.progress import Reporter


@dataclass
class Survey:
    name: str
    layout: str
    n_cases: int
    sites: dict[str, int]
    spacing_min: tuple[float, ...] | None
    spacing_max: tuple[float, ...] | None
    shape_min: tuple[int, ...] | None
    shape_max: tuple[int, ...] | None
    organs: dict[str, str]  # the dataset's label name -> canonical organs ("" when not modelled)
    coverage: dict[str, int] = field(default_factory=dict)  # label name -> cases where present
    problems: list[str] = field(default_factory=list)


def survey(ds: MSDDataset, read_labels: bool = True, progress: Reporter | None = None) -> Survey:
    """Survey ``ds``; problems are listed, never raised."""
    spacings, shapes, problems = [], [], []
    coverage: Counter = Counter()
    task = progress.add_task(f"surveying {ds.name}", total=len(ds.cases)) if progress else None
    for case in ds.cases:
        present: set[str] = set()
        found = check_case(case, ds.labels, check_values=read_labels, found=present)
        problems += found
        try:
            header = nib.load(str(case.image)).header
            spacings.append(tuple(float(z) for z in header.get_zooms()[:3]))
            shapes.append(tuple(int(n) for n in header.get_data_shape()[:3]))
        except Exception:  # noqa: BLE001 (already reported by check_case)
            pass
        if not found:
            coverage.update(present)
        if progress:
            progress.advance(task)
    organs = {name: "+".join(resolve(name)) for v, name in sorted(ds.labels.items()) if v}
    lo = lambda xs: tuple(np.min(xs, axis=0).tolist()) if xs else None  # noqa: E731
    hi = lambda xs: tuple(np.max(xs, axis=0).tolist()) if xs else None  # noqa: E731
    return Survey(ds.name, ds.meta.get("layout", "msd"), len(ds.cases),
                  dict(Counter(c.site for c in ds.cases if c.site)), lo(spacings), hi(spacings),
                  lo(shapes), hi(shapes), organs, dict(coverage), problems)
