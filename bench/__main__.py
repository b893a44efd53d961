"""`python -m bench [relay|memory|join ...] [--quick]`: run figures, print one table, write bench/results/*.json."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from typing import Any

from bench.report import Metric, metrics_json, table, write

FIGURES = ("relay", "memory", "join")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("figures", nargs="*", choices=[*FIGURES, []], help="default: all")
    parser.add_argument("--quick", action="store_true", help="fewer pairs and shorter runs (a smoke test)")
    args = parser.parse_args(argv)
    chosen = args.figures or list(FIGURES)
    metrics: list[Metric] = []
    summary: dict[str, Any] = {"quick": args.quick, "figures": {}}
    failed = []
    for name in chosen:
        started = time.monotonic()
        print(f"bench: running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        try:
            figure_metrics, detail = importlib.import_module(f"bench.{name}").run(quick=args.quick)
        except Exception as exc:
            failed.append(name)
            print(f"bench: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            summary["figures"][name] = {"failed": f"{type(exc).__name__}: {exc}"}
            continue
        elapsed = round(time.monotonic() - started, 1)
        payload = {"figure": name, "seconds": elapsed, "metrics": metrics_json(figure_metrics), **detail}
        write(name, payload)
        summary["figures"][name] = {"seconds": elapsed, "metrics": metrics_json(figure_metrics),
                                    "notes": detail.get("notes", [])}
        metrics += figure_metrics
    write("summary", summary)
    print(table(metrics))
    for name in chosen:
        for note in summary["figures"][name].get("notes", []):
            print(f"  [{name}] {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
