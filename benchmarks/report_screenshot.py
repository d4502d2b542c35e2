"""Open the evaluation report in a real browser: headless Chromium renders ``reports/index.html``
to a PNG, and the script checks the page is not blank (the plots and gallery images decoded).

    .venv/bin/python benchmarks/report_screenshot.py [--report reports/index.html] [--out PNG] [--install]

``--install`` runs ``apt-get install -y chromium`` when no Chromium is found (needs root and the
Debian mirror); without it, a missing browser is reported and the script exits 0 (skipped).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    """The first Chromium-like executable on PATH (or /usr/bin/chromium)."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def screenshot(browser: str, page: Path, out: Path, width: int = 1280, height: int = 2400) -> float:
    """Render ``page`` to ``out`` headless; return the seconds it took."""
    t = time.perf_counter()
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return time.perf_counter() - t


def non_blank(png: Path) -> float:
    """Share of pixels that are not the page background (white)."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB"))
    return float((a.min(axis=2) < 245).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", type=Path, default=Path("reports/index.html"))
    ap.add_argument("--out", type=Path, default=Path("reports/index.png"))
    ap.add_argument("--install", action="store_true")
    a = ap.parse_args()
    browser = find_browser()
    if browser is None and a.install:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True)
        browser = find_browser()
    if browser is None:
        print("skipped: no Chromium found (rerun with --install)")
        return
    if not a.report.exists():
        sys.exit(f"{a.report}: not found (run `dvc repro evaluate` first)")
    secs = screenshot(browser, a.report, a.out)
    ink = non_blank(a.out)
    print("| browser | report KiB | render s | non-background pixels |\n|---|---|---|---|")
    print(f"| {Path(browser).name} | {a.report.stat().st_size / 1024:.0f} | {secs:.1f} | {ink:.1%} |")
    if ink < 0.02:
        sys.exit("the screenshot is blank")


if __name__ == "__main__":
    main()
