"""``make bench-rendered``: memory of the rendered spider over 500 pages rendered in Chromium.

A local server (127.0.0.1) serves a registry page whose 20-row table is built by a script
from a JSON file (the RENEC shape). One ``scrapy crawl rendered`` subprocess renders it 500
times, either as 500 start URLs (up to 4 pages open at once: ``--mode urls``) or by following
a ``?page={page}`` template one page after another (``--mode paging``). Item pipelines are
off: the figure is the spider and its browser, not the store.

Every ``--interval`` seconds the resident memory of the whole process tree (Scrapy, the
Playwright drivers, Chromium and its renderers) is sampled with psutil, next to how many
pages the server has served. Printed and written to bench/out/rendered.json: the peak RSS
(and PSS, which counts pages shared between Chromium's processes once) within each block of
100 pages, and the ratio of the last block's peak to the first's and to the second's (the
plateau after warm-up). A flat curve has ratios near 1.0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harvester.services.localsite import LocalSite  # noqa: E402

ROWS = 20
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Registro</title></head><body>
<table id="registry"><tbody></tbody></table>
<script>
const page = Number(new URLSearchParams(location.search).get("page") || 1);
fetch("rows.json").then(r => r.json()).then(rows => {
  const body = document.querySelector("#registry tbody");
  for (const r of rows) {
    const tr = document.createElement("tr");
    const code = "P" + page + "-" + r.code;
    tr.innerHTML = `<td class="code">${code}</td><td class="title">` +
      `<a href="/std/${code}">${r.title} (${page})</a></td><td class="date">${r.date}</td>`;
    body.appendChild(tr);
  }
  document.getElementById("registry").dataset.page = String(page);
});
</script></body></html>
"""
FIELDS = ('{ url = "td.title a", id = "td.code", title = "td.title", '
          'published = "td.date" }')


def build_site(root: Path) -> None:
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    (root / "registry.html").write_text(PAGE, encoding="utf-8")
    rows = [{"code": f"EC{i:04d}", "title": f"Estándar de competencia {i}",
             "date": f"{1 + i % 28:02d}/03/2024"} for i in range(ROWS)]
    (root / "rows.json").write_text(json.dumps(rows), encoding="utf-8")


def sources_toml(path: Path, base: str, pages: int, mode: str) -> None:
    if mode == "urls":
        urls = ", ".join(f'"{base}/registry.html?page={n}"' for n in range(1, pages + 1))
        paging = ""
    else:
        urls = f'"{base}/registry.html"'
        paging = f'next_page = "?page={{page}}"\nmax_pages = {pages}\n'
    path.write_text(
        f'[[sources]]\nname = "bench"\nkind = "rendered"\nurls = [{urls}]\n'
        f'wait_for = "#registry[data-page]"\nitem_selector = "#registry tbody tr"\n'
        f"fields = {FIELDS}\n{paging}", encoding="utf-8")


def tree_memory(proc: psutil.Process) -> tuple[int, int, int]:
    """RSS and PSS summed over the process and its descendants, and how many there are."""
    rss = pss = count = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        count += 1
    return rss, pss, count


def run(pages: int, mode: str, interval: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-rendered-") as tmp, \
            LocalSite(Path(tmp)) as site:
        build_site(Path(tmp))
        sources = Path(tmp) / "sources.toml"
        sources_toml(sources, site.url, pages, mode)
        env = {**os.environ, "HARVEST_SOURCES": str(sources), "HARVEST_HOME": tmp,
               # No database: the crawl goes on as if the source were new.
               "HARVEST_DATABASE_URL": "postgresql://127.0.0.1:9/none"}
        cmd = [sys.executable, "-m", "scrapy", "crawl", "rendered", "-a", "source=bench",
               "-s", "ITEM_PIPELINES={}", "-s", "AUTOTHROTTLE_ENABLED=False",
               "-s", "HARVEST_CONDITIONAL_ENABLED=False", "-s", "LOG_LEVEL=INFO",
               "-s", f"LOG_FILE={tmp}/crawl.log"]
        started = time.monotonic()
        child = subprocess.Popen(cmd, cwd=ROOT, env=env)
        proc = psutil.Process(child.pid)
        samples: list[tuple[int, int, int, int]] = []
        while child.poll() is None:
            try:
                rss, pss, count = tree_memory(proc)
            except psutil.NoSuchProcess:
                break
            samples.append((site.hits("/registry.html"), rss, pss, count))
            time.sleep(interval)
        elapsed = time.monotonic() - started
        log = (Path(tmp) / "crawl.log").read_text(errors="replace")
        served = site.hits("/registry.html")
    if child.returncode != 0 or served < pages:
        sys.exit(f"the crawl failed (exit {child.returncode}, {served}/{pages} pages served):\n"
                 + log[-3000:])
    return summarise(samples, pages, mode, elapsed, log)


def summarise(samples: list[tuple[int, int, int, int]], pages: int, mode: str,
              elapsed: float, log: str) -> dict[str, Any]:
    blocks: dict[int, dict[str, int]] = {}
    for served, rss, pss, count in samples:
        if served == 0:
            continue  # start-up: no browser yet
        block = min(pages, math.ceil(served / 100) * 100)
        peak = blocks.setdefault(block, {"rss": 0, "pss": 0, "processes": 0})
        peak["rss"] = max(peak["rss"], rss)
        peak["pss"] = max(peak["pss"], pss)
        peak["processes"] = max(peak["processes"], count)
    mib = {b: {k: round(v / 2**20, 1) if k != "processes" else v for k, v in p.items()}
           for b, p in sorted(blocks.items())}
    keys = sorted(mib)

    def ratio(kind: str, base: int) -> float | None:
        return round(mib[keys[-1]][kind] / mib[base][kind], 3) if base in mib else None

    return {
        "mode": mode, "pages": pages, "seconds": round(elapsed, 1),
        "pages_per_second": round(pages / elapsed, 2), "samples": len(samples),
        "peak_mib_by_pages": mib,
        "rss_ratio_last_to_first": ratio("rss", keys[0]),
        "rss_ratio_last_to_second": ratio("rss", keys[1]) if len(keys) > 1 else None,
        "pss_ratio_last_to_second": ratio("pss", keys[1]) if len(keys) > 1 else None,
        "items": _stat(log, "item_scraped_count"),
        "pages_rendered": _stat(log, "harvest/fetched"),
        "browser_pages_opened": _stat(log, "playwright/page_count"),
        "max_pages_open_at_once": _stat(log, "playwright/page_count/max_concurrent"),
    }


def _stat(log: str, key: str) -> int | None:
    marker = f"'{key}': "
    at = log.rfind(marker)
    if at < 0:
        return None
    digits = log[at + len(marker):].split(",", 1)[0].strip()
    return int(digits) if digits.isdigit() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--mode", choices=("urls", "paging", "both"), default="both")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "rendered.json")
    args = parser.parse_args()
    modes = ("urls", "paging") if args.mode == "both" else (args.mode,)
    results = [run(args.pages, mode, args.interval) for mode in modes]
    for result in results:
        print(f"\n{result['mode']}: {result['pages']} pages in {result['seconds']} s "
              f"({result['pages_per_second']} pages/s), {result['items']} items")
        print(f"{'pages':>6} {'peak RSS MiB':>13} {'peak PSS MiB':>13} {'processes':>10}")
        for block, peak in result["peak_mib_by_pages"].items():
            print(f"{block:>6} {peak['rss']:>13} {peak['pss']:>13} {peak['processes']:>10}")
        print(f"RSS last/first {result['rss_ratio_last_to_first']}, last/second "
              f"{result['rss_ratio_last_to_second']}; PSS last/second "
              f"{result['pss_ratio_last_to_second']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
