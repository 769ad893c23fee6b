"""Results for people: a rich table on the terminal, ``report.md``, and slice overlays (PNG)."""
from __future__ import annotations

import csv
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.table import Table  # noqa: E402

from medpeft.data.ontology import ORGAN_ID, ORGANS, resolve  # noqa: E402
from medpeft.io import atomic_path, write_text  # noqa: E402

COLUMNS = ("setting", "method", "k", "mean_dice", "trainable", "trainable_pct", "seconds")


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def results_table(records: list[dict], title: str = "medpeft results") -> Table:
    """Readable at 80 columns: short headers, method names never cut (the setting folds)."""
    table = Table(title=title)
    table.add_column("setting", overflow="fold")
    table.add_column("method", no_wrap=True, min_width=max([len(r["method"]) for r in records],
                                                           default=6))
    for col in ("K", "Dice", "trainable", "%", "s"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in records:
        table.add_row(r["setting"], r["method"], str(r["k"] or "-"), f"{r['mean_dice']:.3f}",
                      f"{r['trainable']:,}", f"{r['trainable_pct']:.3f}", f"{r['seconds']:.1f}")
    return table


def write_csv(path: Path, records: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)


def _markdown_table(records: list[dict]) -> str:
    lines = ["| setting | method | K | mean Dice | trainable params | % of model | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['setting']} | {r['method']} | {r['k'] or '-'} | {r['mean_dice']:.3f} | "
                     f"{r['trainable']:,} | {r['trainable_pct']:.3f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def _organ_table(records: list[dict]) -> str:
    organs = [o for o in ORGANS if any(o in r.get("organs", {}) for r in records)]
    head = "| setting | method | K | " + " | ".join(organs) + " |"
    lines = [head, "|" + "---|" * (3 + len(organs))]
    for r in records:
        cells = [f"{r['organs'][o]:.2f}" if o in r.get("organs", {}) else "-" for o in organs]
        lines.append(f"| {r['setting']} | {r['method']} | {r['k'] or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(path: Path, records: list[dict], header: dict, overlay: str | None) -> None:
    """``report.md``: what ran, on what machine, the results table and per-organ Dice."""
    text = [f"# {header.get('title', 'medpeft report')}", "",
            f"- command: `{header.get('command', '')}`", f"- machine: {machine()}",
            *[f"- {k}: {v}" for k, v in header.items() if k not in ("title", "command")], "",
            "## Mean Dice (held-out volumes, original geometry)", "", _markdown_table(records), "",
            "## Per-organ Dice", "", _organ_table(records), ""]
    if overlay:
        text += ["## Slice overlay", "", f"![overlay]({overlay})", ""]
    write_text(path, "\n".join(text))


def _canonical_slice(path: Path, k: int | None = None) -> tuple[np.ndarray, int]:
    data = np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)
    return data, k if k is not None else data.shape[2] // 2


def overlay_png(path: Path, image: Path, truth: Path, truth_labels: dict[int, str],
                *, predictions: dict[str, Path]) -> None:
    """Axial slice (RAS, radiological display) of image, ground truth and each prediction.

    ``truth_labels`` is the dataset's label map; prediction files hold canonical organ ids.
    """
    img, _ = _canonical_slice(image)
    lut = np.zeros(max(truth_labels) + 1, dtype=np.uint8)
    for value, name in truth_labels.items():
        organs = resolve(name)
        lut[value] = ORGAN_ID[organs[0]] if organs else 0
    truth = lut[_canonical_slice(truth)[0].astype(np.int64)]
    k = int(np.argmax([(np.unique(truth[:, :, z]) > 0).sum() for z in range(truth.shape[2])]))
    panels = [("ground truth", truth)] + [(n, _canonical_slice(p)[0]) for n, p in predictions.items()]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 3.4))
    show = lambda a: np.flipud(a[::-1, :, k].T)  # noqa: E731  (patient's right on the left)
    axes[0].imshow(show(np.clip(img, -175, 250)), cmap="gray")
    axes[0].set_title("CT (window -175..250 HU)", fontsize=9)
    cmap = plt.get_cmap("tab20", len(ORGANS) + 1)
    for ax, (name, lab) in zip(axes[1:], panels):
        ax.imshow(show(np.clip(img, -175, 250)), cmap="gray")
        ax.imshow(np.ma.masked_equal(show(lab), 0), cmap=cmap, vmin=0, vmax=len(ORGANS),
                  alpha=0.55, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
