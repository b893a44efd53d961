"""`python -m bench [relay|memory|join ...] [--quick]`: run figures, print one table, write bench/results/*.json."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from typing import Any

import orjson

from bench.report import RESULTS, Metric, metrics_json, table, write

FIGURES = ("relay", "memory", "join")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("figures", nargs="*", metavar="figure", help=f"any of {', '.join(FIGURES)}; default: all")
    parser.add_argument("--quick", action="store_true", help="fewer pairs and shorter runs (a smoke test)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.figures if name not in FIGURES]
    if unknown:
        parser.error(f"unknown figure {unknown[0]!r}; choose from {', '.join(FIGURES)}")
    chosen = args.figures or list(FIGURES)
    metrics: list[Metric] = []
    notes: dict[str, list[str]] = {}
    failed = []
    for name in chosen:
        started = time.monotonic()
        print(f"bench: running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        try:
            figure_metrics, detail = importlib.import_module(f"bench.{name}").run(quick=args.quick)
        except Exception as exc:
            failed.append(name)
            print(f"bench: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            write(name, {"figure": name, "quick": args.quick, "failed": f"{type(exc).__name__}: {exc}"})
            continue
        elapsed = round(time.monotonic() - started, 1)
        payload = {
            "figure": name,
            "quick": args.quick,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": elapsed,
            "metrics": metrics_json(figure_metrics),
            **detail,
        }
        write(name, payload)
        notes[name] = detail.get("notes", [])
        metrics += figure_metrics
    write("summary", summarise())
    print(table(metrics))
    for name, figure_notes in notes.items():
        for note in figure_notes:
            print(f"  [{name}] {note}")
    return 1 if failed else 0


def summarise() -> dict[str, Any]:
    """The latest result of every figure (a run of one figure keeps the others' last results)."""
    figures: dict[str, Any] = {}
    for name in FIGURES:
        path = RESULTS / f"{name}.json"
        if path.exists():
            data = orjson.loads(path.read_bytes())
            keys = ("quick", "finished_at", "seconds", "metrics", "notes", "failed")
            figures[name] = {key: data[key] for key in keys if key in data}
    return {"figures": figures}


if __name__ == "__main__":
    sys.exit(main())
