"""``make bench-steps``: what each item pipeline costs an item inside a real crawl.

The corpus, server and crawl of ``bench/pipeline.py`` ((b) and (d) of ``make bench``),
with the timing stages of ``bench/step_timer.py`` before, between and after the pipelines.
Each step's figure is the median over the crawl's items of the time from one stage to the
next; the "stages only" crawl gives what a stage itself adds to each step. Crawls
alternate over ``--rounds`` rounds. Figures go to stdout and bench/out/steps.json;
docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pipeline as bench  # noqa: E402

from harvester.services.localsite import LocalSite  # noqa: E402

STAGES = [f"step_timer.Stage{n}" for n in range(5)]
RUNS = {
    "stages only": [],
    "full pipeline (b)": ["validate", "dedupe", "score", "store"],
    "rows discarded (d)": ["validate", "dedupe", "score", bench.DISCARD],
}


def item_pipelines(steps: list[str]) -> str:
    """Stage0, step 1, Stage1, …, step 4, Stage4; without steps, the stages alone."""
    order = {STAGES[0]: 50}
    for n in range(1, 5):
        if n <= len(steps):
            order[bench.PIPELINES.get(steps[n - 1], steps[n - 1])] = 100 * n
        order[STAGES[n]] = 100 * n + 50
    return json.dumps(order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = bench.in_scratch("harvest-steps-", lambda work: run(work, args), "steps.json")
    print(json.dumps(results["median_of_rounds_us"], indent=2))


def run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    site_root, paths, url = bench.corpus_and_database(work, args.feeds, args.entries)
    every: dict[str, list[dict[str, Any]]] = {label: [] for label in RUNS}
    with LocalSite(site_root) as site:
        env = bench.crawl_env(work, site.url, paths, url)
        bench.warm_up(site.url, paths)
        for _ in range(args.rounds):
            for label, steps in RUNS.items():
                bench.truncate(url)
                steps_file = work / "steps.json"
                steps_file.unlink(missing_ok=True)
                measured = bench.crawl("steps", item_pipelines(steps),
                                       {**env, "BENCH_STEPS_FILE": str(steps_file)}, work)
                names = [s.rsplit(".", 1)[-1] for s in steps] or ["(empty)"] * 4
                figures = json.loads(steps_file.read_text())
                collector = figures.pop("gc")
                every[label].append({
                    "items_per_s": measured["items_per_s"],
                    "cpu_seconds": measured["cpu_seconds"],
                    "steps": {f"{n} {names[int(n) - 1]}": figures[n] for n in sorted(figures)},
                    "gc": collector,
                })
                print(label, json.dumps(every[label][-1]), flush=True)
    medians = {
        label: {
            **{step: statistics.median(r["steps"][step]["median_us"] for r in rounds)
               for step in rounds[0]["steps"]},
            "gc seconds": statistics.median(sum(g["seconds"] for g in r["gc"].values())
                                            for r in rounds),
            "items/s": statistics.median(r["items_per_s"] for r in rounds),
        }
        for label, rounds in every.items()
    }
    return {"feeds": args.feeds, "entries_per_feed": args.entries, "rounds": every,
            "median_of_rounds_us": medians}


if __name__ == "__main__":
    main()
