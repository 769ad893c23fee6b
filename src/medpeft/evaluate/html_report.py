"""A self-contained ``report.html``: tables, plots and a slice scroller in one file.

Everything is inline (PNG images as data URIs, a few lines of plain JavaScript, no network), so
the file can be mailed or archived as it is. The per-organ table marks each organ's best row;
the scroller shows one test case's CT, ground truth and every method's prediction, slice by
slice. The page sets its ``data-state`` to ``ready`` once its script ran, and to ``error`` on
any script error, which the test reads back from headless Chromium.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from medpeft.data.msd import case_name  # noqa: E402
from medpeft.data.ontology import ORGAN_ID, ORGANS, resolve  # noqa: E402
from medpeft.io import write_text  # noqa: E402

HU_WINDOW = (-175.0, 250.0)
STYLE = """body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;
margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){text-align:left}.best{font-weight:bold;
background:#e6f4e6}.panel{display:inline-block;margin:4px;text-align:center;font-size:12px}
.panel img{image-rendering:pixelated;width:220px}"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_uri(fig) -> str:
    """A matplotlib figure as an inline PNG (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return _data_uri(buf.getvalue())


def _colours() -> np.ndarray:
    cmap = plt.get_cmap("tab20", len(ORGANS) + 1)
    return (np.array([cmap(i)[:3] for i in range(len(ORGANS) + 1)]) * 255).astype(np.uint8)


def _slice_png(ct: np.ndarray, labels: np.ndarray | None) -> bytes:
    """One axial slice (radiological display) as PNG bytes: grey CT, organs blended on top."""
    grey = (np.clip((ct - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0]), 0, 1) * 255)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if labels is not None:
        lut = _colours()
        ids = np.clip(labels, 0, len(lut) - 1).astype(np.int64)
        mask = ids > 0
        rgb[mask] = 0.45 * rgb[mask] + 0.55 * lut[ids[mask]]
    view = np.flipud(rgb.astype(np.uint8)[::-1].transpose(1, 0, 2))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(view)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _canonical(path: Path) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)


def scroller(image: Path, truth: Path, truth_labels: dict[int, str],
             predictions: dict[str, Path], *, step: int = 2) -> dict:
    """Every ``step``-th axial slice of one case: CT, ground truth and each prediction."""
    lut = np.zeros(max(truth_labels) + 1, dtype=np.int64)
    for value, name in truth_labels.items():
        organs = resolve(name)
        lut[value] = ORGAN_ID[organs[0]] if organs else 0
    ct = _canonical(image).astype(np.float32)
    panels = {"CT": None, "ground truth": lut[_canonical(truth).astype(np.int64)],
              **{name: _canonical(p).astype(np.int64) for name, p in predictions.items()}}
    frames = {name: [_data_uri(_slice_png(ct[:, :, z], None if lab is None else lab[:, :, z]))
                     for z in range(0, ct.shape[2], step)] for name, lab in panels.items()}
    return {"case": case_name(image), "frames": frames}  # whole, also when it is a DICOM UID


def _table(header: list[str], rows: list[list], best: dict[int, set[int]] | None = None) -> str:
    """An HTML table; ``best`` maps a column to the row indices to mark."""
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            mark = ' class="best"' if best and i in best.get(j, ()) else ""
            cells.append(f"<td{mark}>{html.escape(str(value))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def organ_table(records: list[dict]) -> str:
    """Per-organ Dice; within each setting of several rows, each organ's best row is marked."""
    organs = [o for o in ORGANS if any(o in r.get("organs", {}) for r in records)]
    rows, best = [], {}
    for r in records:
        rows.append([r["setting"], r["method"], r["k"] or "-"]
                    + [f"{r['organs'][o]:.3f}" if o in r.get("organs", {}) else "-"
                       for o in organs])
    settings = defaultdict(list)
    for i, r in enumerate(records):
        settings[r["setting"]].append(i)
    for members in (m for m in settings.values() if len(m) > 1):
        for j, organ in enumerate(organs, start=3):
            scores = [(records[i].get("organs", {}).get(organ, math.nan), i) for i in members]
            scores = [(v, i) for v, i in scores if not math.isnan(v)]
            if scores:
                best.setdefault(j, set()).add(max(scores)[1])
    return _table(["setting", "method", "K", *organs], rows, best)


def dice_plots(records: list[dict]) -> list[str]:
    """Dice vs K and Dice vs trainable parameters, one line / point set per method."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("k"):
            by_method[r["method"]].append(r)
    uris = []
    for x_key, label, log in (("k", "labelled volumes K", False),
                              ("trainable", "trainable parameters", True)):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for method, rs in sorted(by_method.items()):
            rs = sorted(rs, key=lambda r: r[x_key])
            ax.plot([r[x_key] for r in rs], [r["mean_dice"] for r in rs], "o-", label=method)
        ax.set_xlabel(label)
        ax.set_ylabel("mean Dice")
        if log:  # symlog: zero-shot's 0 trainable parameters stays on the axis
            ax.set_xscale("symlog", linthresh=1)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        uris.append(figure_uri(fig))
    return uris


SCRIPT = """<script>
window.onerror = function () { document.body.dataset.state = "error"; };
const cases = __CASES__;
function show(c, i) {
  for (const [name, frames] of Object.entries(cases[c].frames)) {
    document.getElementById("img-" + c + "-" + name).src = frames[i];
  }
  document.getElementById("at-" + c).textContent = "slice " + (i + 1) + " / " +
    Object.values(cases[c].frames)[0].length;
}
cases.forEach(function (item, c) {
  const n = Object.values(item.frames)[0].length;
  const slider = document.getElementById("slider-" + c);
  slider.max = n - 1;
  slider.value = Math.floor(n / 2);
  slider.oninput = function () { show(c, Number(slider.value)); };
  show(c, Number(slider.value));
});
if (document.body.dataset.state !== "error") { document.body.dataset.state = "ready"; }
</script>"""


def _scroller_html(c: int, case: dict) -> str:
    panels = "".join(f'<div class="panel"><img id="img-{c}-{html.escape(name)}" alt="{html.escape(name)}">'
                     f"<br>{html.escape(name)}</div>" for name in case["frames"])
    return (f"<h3>{html.escape(case['case'])}</h3><input type=\"range\" id=\"slider-{c}\" min=\"0\" "
            f"style=\"width:440px\"> <span id=\"at-{c}\"></span><br>{panels}")


def write_html_report(path: Path, *, title: str, facts: dict, records: list[dict],
                      cases: list[dict]) -> Path:
    """Write ``report.html``: what ran, the results and per-organ tables, the plots and a slice
    scroller for each case in ``cases`` (from :func:`scroller`)."""
    main = _table(["setting", "method", "K", "mean Dice", "trainable", "% of model", "s"],
                  [[r["setting"], r["method"], r["k"] or "-", f"{r['mean_dice']:.3f}",
                    f"{r['trainable']:,}", f"{r['trainable_pct']:.3f}", f"{r['seconds']:.1f}"]
                   for r in records])
    plots = "".join(f'<img src="{uri}" alt="plot"> ' for uri in dice_plots(records))
    body = [f"<h1>{html.escape(title)}</h1>", "<ul>"]
    body += [f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in facts.items()]
    body += ["</ul>", "<h2>Mean Dice (held-out volumes)</h2>", main,
             "<h2>Per-organ Dice (best per organ marked)</h2>", organ_table(records),
             "<h2>Dice vs K and vs trainable parameters</h2>", plots,
             "<h2>Slices (CT, ground truth, each method)</h2>"]
    body += [_scroller_html(c, case) for c, case in enumerate(cases)]
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body data-state=\"loading\">{''.join(body)}"
            f"{SCRIPT.replace('__CASES__', json.dumps(cases))}</body></html>")
    write_text(path, page)
    return path
