"""A real run on two workers, its report, and a screenshot of the HTML report's accounting section.

A private Redis, two real `fleet-worker` processes (cpu, one slot each) and a catalog of spin
jobs of unequal length (bench.plugin) on cpu and cuda; no worker serves cuda, so those jobs end
SKIPPED (no worker) and the run's report opens with INCOMPLETE. Writes the markdown report and
a PNG of the HTML's accounting section (headless chromium).

    .venv/bin/python scripts/accounting_screenshot.py [--out docs/report-accounting.png]
        [--report docs/reports/accounting-two-workers.md]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import catalog, private_fleet  # noqa: E402
from fleet.broker import make_app  # noqa: E402
from fleet.settings import RunSettings  # noqa: E402
from fleet.store import ResultStore  # noqa: E402
from orchestrator import report, runs  # noqa: E402
from orchestrator.submit import submit  # noqa: E402

SPINS_MS = (2400, 1800, 1500, 1200, 900, 700, 500, 300)


def section(html: str) -> str:
    """The page's head and its accounting section alone (same CSS, same markup)."""
    head = html[: html.index("<body>")]
    start = html.index('<section id="accounting">')
    end = html.index("</section>", start) + len("</section>")
    return f"{head}<body><main>{html[start:end]}</main></body></html>"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "report-accounting.png")
    p.add_argument("--report", type=Path, default=ROOT / "docs" / "reports" / "accounting-two-workers.md")
    args = p.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found (apt-get install chromium)")
    with private_fleet("accounting-screenshot") as (server, workers):
        workers.start("a")
        workers.start("b")
        store = ResultStore(server.url)
        names = [f"spin_{ms}ms" for ms in SPINS_MS]
        run_id = submit(store, make_app(server.url), catalog("spin", names), None, ["cpu", "cuda"], RunSettings())
        runs.skip_unserved(store, run_id, store.registry.served_queues())  # as the embedded run does
        runs.wait(store, run_id)
        data = report.build(store, run_id, prices={"cpu": 0.1, "cuda": 2.5})
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report.render_markdown(data))
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "accounting.html"
        page.write_text(section(report.render_html(data)))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
        flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
        flags += [f"--user-data-dir={tmp}/profile", f"--screenshot={args.out}", "--window-size=1100,620"]
        subprocess.run([chromium, *flags, page.as_uri()], check=True, capture_output=True)
    print(args.report)
    print(args.out)


if __name__ == "__main__":
    main()
