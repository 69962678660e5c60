"""report.html as a person sees it: rendered by headless Chromium at 1400, 800 and 480 px.

At each width the page must not scroll sideways (only the wide table scrolls, inside its own box),
keep a margin on both sides, and draw every SVG whole: inside the page, at no less than 3/4 of its
designed size, with every label inside its SVG. `make test-report` installs Chromium when it is
missing and runs this file; the screenshots are left in the test's temporary directory.
"""
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python" / "tests"))
from _support import ROOT, run  # noqa: E402

WIDTHS = [1400, 800, 480]
MARGIN = 8  # px kept free on each side of the page's text

# Runs after layout; writes what it measured into the page, which --dump-dom then prints.
MEASURE = """
<script>
window.addEventListener('load', () => {
  const W = window.innerWidth, out = {width: W, scrollWidth: document.documentElement.scrollWidth,
                                      overflow: [], margins: [], svgs: [], clipped: []};
  const box = document.querySelector('.scroll');
  const name = el => el.tagName.toLowerCase() + (el.className && el.className.baseVal === undefined ? '.' + el.className : '');
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('svg') || el.tagName === 'SCRIPT' || el.id === 'kd-measure') continue;
    if (box && box.contains(el) && el !== box) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.left < -0.5 || r.right > W + 0.5) out.overflow.push(`${name(el)} spans ${r.left.toFixed(1)}..${r.right.toFixed(1)}`);
    if (el.parentElement === document.body && (r.left < %(m)d || r.right > W - %(m)d))
      out.margins.push(`${name(el)} spans ${r.left.toFixed(1)}..${r.right.toFixed(1)}`);
  }
  for (const svg of document.querySelectorAll('svg')) {
    const r = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal, label = svg.getAttribute('aria-label');
    out.svgs.push({label, left: r.left, right: r.right, scale: vb && vb.width ? r.width / vb.width : 0});
    for (const t of svg.querySelectorAll('text')) {
      const b = t.getBoundingClientRect();
      if (b.left < r.left - 0.5 || b.right > r.right + 0.5 || b.top < r.top - 0.5 || b.bottom > r.bottom + 0.5)
        out.clipped.push(`${label}: '${t.textContent}'`);
    }
  }
  out.table = box ? {right: box.getBoundingClientRect().right, scrolls: box.scrollWidth > box.clientWidth} : null;
  parent.postMessage(JSON.stringify(out), '*');
});
</script>
""" % {"m": MARGIN}

# Chromium's window is at least 500 px wide, so the report is laid out in an iframe of exactly the
# width under test; the iframe's page sends its measurement up and this page writes it down.
FRAME = """<!doctype html><html><body style="margin:0">
<iframe src="%(src)s" style="border:0; width:%(w)dpx; height:2400px; display:block"></iframe>
<script>
window.addEventListener('message', e => {
  const pre = document.createElement('pre'); pre.id = 'kd-measure'; pre.textContent = e.data; document.body.appendChild(pre);
});
</script></body></html>
"""


def chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    raise AssertionError("Chromium is not installed: run `make test-report`, which installs it")


def browse(page: Path, width: int, *args):
    """Chromium on `page` (which holds an iframe `width` px wide), its window a little wider."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={page.parent / 'chromium-profile'}", f"--window-size={max(width, 500) + 20},2400",
           "--virtual-time-budget=5000", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def framed(report: Path, inner: Path, width: int) -> Path:
    outer = report.with_name(f"frame-{inner.stem}-{width}.html")
    outer.write_text(FRAME % {"src": inner.name, "w": width})
    return outer


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A real sweep's report.html: 400 fortunes, a quick built-in teacher, two students, one diverging lr."""
    d = tmp_path_factory.mktemp("report")
    rows = (ROOT / "fixtures/fortunes/fortunes.csv").read_text().splitlines(keepends=True)[:401]
    (d / "fortunes.csv").write_text("".join(rows))
    run("prep", d / "fortunes.csv", "--out", d / "f.lmdb", "--text-column", "text",
        "--label-column", "label", "--id-column", "id", "--seed", "7", "--quiet")
    run("teach", "--data", d / "f.lmdb", "--out", d / "t.lmdb", "--teacher", "linear", "--epochs", "2",
        "--ensemble", "1", "--lr", "0.1", "--quiet")
    s = run("sweep", "--data", d / "f.lmdb", "--logits", d / "t.lmdb", "--student", "linear,fasttext:dim=8",
            "--temperature", "2,4", "--alpha", "0,0.5,0.9", "--lr", "0.3,1e38", "--epochs", "3", "--seeds", "2",
            "--out", d / "sweep", "--quiet")
    assert "verdict: " in s.stdout and "diverged" in s.stdout
    return d / "sweep" / "report.html"


def test_the_report_says_what_it_shows(report):
    page = report.read_text()
    assert "<script" not in page, "the report itself runs no script"
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert "fortunes.csv" in title and "teacher builtin" in title and "runs of" in title
    assert "Grid: students linear, fasttext:dim=8 × T 2.0, 4.0 × α 0.0, 0.5, 0.9 × lr 0.3, 1e+38 × 2 seeds" in page
    assert "<th>#</th>" in page and "α = 0: no-KD baseline" in page and "class='key base'" in page
    # Every heatmap cell prints the learning rate chosen for it (here lr 1e38 diverges, so 0.3 is
    # the only one left); each heatmap has a colour scale.
    assert page.count("<figure><svg") == 4
    assert len(re.findall(r">lr 0\.3(?: · no KD, any T)?</text>", page)) == 2 * (1 + 2 * 2)
    assert page.count("linearGradient id='heat") == 2
    # The bar chart's axis starts at 0; the curve chart has a title and axis labels.
    assert ">0.0</text>" in page and ">1.0</text>" in page
    assert "per epoch (mean over seeds)</text>" in page and ">epoch</text>" in page and "rotate(-90)" in page


@pytest.mark.parametrize("width", WIDTHS)
def test_the_report_fits_the_window(report, width):
    probe = report.with_name(f"probe-{width}.html")
    probe.write_text(report.read_text().replace("</body>", MEASURE + "</body>"))
    r = browse(framed(report, probe, width), width, "--dump-dom")
    found = re.search(r'<pre id="kd-measure">(.*?)</pre>', r.stdout, re.S)
    assert found, f"Chromium printed no measurement:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    m = json.loads(html.unescape(found.group(1)))
    shot = browse(framed(report, report, width), width, f"--screenshot={report.with_name(f'report-{width}.png')}")
    assert shot.returncode == 0 and report.with_name(f"report-{width}.png").stat().st_size > 10_000, shot.stderr[-2000:]

    assert m["width"] == width, "the layout was done at the window's width"
    assert m["scrollWidth"] <= width, f"the page scrolls sideways: {m['scrollWidth']} px wide in {width}"
    assert m["overflow"] == [], "outside the window: " + "; ".join(m["overflow"])
    assert m["margins"] == [], f"closer than {MARGIN} px to an edge: " + "; ".join(m["margins"])
    assert len(m["svgs"]) == 4
    for svg in m["svgs"]:
        assert svg["left"] >= MARGIN - 0.5 and svg["right"] <= width - MARGIN + 0.5, svg
        assert svg["scale"] >= 0.75, f"{svg['label']} drawn at {svg['scale']:.2f} of its size: its text is too small to read"
    assert m["clipped"] == [], "labels cut off at their SVG's edge: " + "; ".join(m["clipped"])
    assert m["table"]["right"] <= width - MARGIN + 0.5
    if width == 480:
        assert m["table"]["scrolls"], "at 480 px the table is wider than the page and scrolls inside its box"
