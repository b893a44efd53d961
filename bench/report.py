"""Medians, ratios, the printed table and the JSON files under bench/results/."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Metric:
    """One row of the table: Stue beside its baseline, from the same alternating runs."""

    figure: str
    metric: str
    unit: str
    stue: float
    baseline: float
    ratio: float  # median of the per-pair ratios Stue / baseline
    target: str  # e.g. "ratio >= 0.4", "stue <= 40"
    met: bool | None
    pairs: int


def median(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else float("nan")


def paired(figure: str, metric: str, unit: str, stue: list[float], baseline: list[float], target: str) -> Metric:
    """Medians of both sides and the median per-pair ratio; `target` is checked against ratio or stue."""
    ratios = [s / b for s, b in zip(stue, baseline, strict=True) if b and not math.isnan(s) and not math.isnan(b)]
    m = Metric(figure, metric, unit, median(stue), median(baseline), median(ratios), target, None, len(ratios))
    m.met = check(m)
    return m


def check(m: Metric) -> bool | None:
    if not m.target:
        return None
    subject, op, bound = m.target.split()
    value = m.ratio if subject == "ratio" else m.stue
    if math.isnan(value):
        return False
    return value >= float(bound) if op == ">=" else value <= float(bound)


def write(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    return path


def metrics_json(metrics: list[Metric]) -> list[dict[str, Any]]:
    return [asdict(m) for m in metrics]


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(metrics: list[Metric]) -> str:
    head = ["figure", "metric", "Stue", "baseline", "ratio", "target", "met", "pairs"]
    rows = [
        [
            m.figure,
            f"{m.metric} ({m.unit})",
            _fmt(m.stue),
            _fmt(m.baseline),
            _fmt(m.ratio),
            m.target or "-",
            {True: "yes", False: "NO", None: "-"}[m.met],
            str(m.pairs),
        ]
        for m in metrics
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)
