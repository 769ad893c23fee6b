"""report.html renders in headless Chromium: its script runs without error, the tables are there
and the screenshot is a real page (Chromium: the Debian package `chromium`, which .ci/run
installs when missing)."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from PIL import Image

from medpeft.data.msd import load_msd
from medpeft.evaluate.html_report import scroller, write_html_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_page_loads_without_script_errors_and_shows_its_tables(collection, tmp_path):
    target = load_msd(collection / "Task10_NewSite")
    case = target.cases[0]
    records = [{"setting": "new site", "method": m, "k": k, "mean_dice": 0.4 + 0.1 * i + 0.01 * k,
                "organs": {"liver": 0.9 - 0.1 * i, "spleen": 0.5 + 0.1 * i},
                "trainable": 10 ** (3 + i), "trainable_pct": 0.1, "seconds": 2.0}
               for i, m in enumerate(("decoder", "blackbox-spatial1")) for k in (1, 5)]
    page = write_html_report(tmp_path / "report.html", title="medpeft test report",
                             facts={"command": "pytest"}, records=records,
                             cases=[scroller(case.image, case.label, target.labels,
                                             {"decoder K=5": case.label})])
    dom = _chromium("--dump-dom", page.as_uri()).stdout
    assert 'data-state="ready"' in dom  # the script ran to its end; window.onerror never fired
    assert dom.count("<table") == 2 and "blackbox-spatial1" in dom and 'class="best"' in dom
    assert dom.count('src="data:image/png;base64,') >= 5  # two plots, three slice panels
    shot = tmp_path / "shot.png"
    _chromium("--hide-scrollbars", "--window-size=1280,1800", f"--screenshot={shot}",
              page.as_uri())
    pixels = Image.open(shot).convert("L")
    assert pixels.size == (1280, 1800) and len(set(pixels.getdata())) > 50  # not a blank page
