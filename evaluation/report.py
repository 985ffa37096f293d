"""Retrieval metrics as people read them: in percent, and as the table both front ends end with.

The metric functions return fractions (0..1); everything a person reads (the console table,
training_stats.csv, metrics.json, the epoch lines and the figures) shows them in percent, through
``in_percent`` here, so one metric has one scale everywhere.
"""
from __future__ import annotations

from typing import Any, Mapping


def in_percent(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics with every fraction as a percentage; counts (``num_*``) stay as they are."""
    return {key: value if key.startswith("num_") or value is None else 100.0 * value
            for key, value in metrics.items()}


def metric_rows(k: int) -> list[tuple[str, str]]:
    """(key, label) of the metrics shown, in DESIGN.md's order."""
    rows = [(f"closest_{i}", f"closest[{i}]") for i in range(1, k + 1)]
    return rows + [(f"in_any@{k}", f"in_any@{k}"), ("precision@1", "precision@1"),
                   ("map@r", "MAP@R"), ("r_precision", "R-precision")]


MIN_ITEMS, MIN_QUERIES = 10, 50  # below either, a table's percentages are mostly noise


def format_metrics_table(results: Mapping[str, Mapping[str, float]], k: int,
                         num_items: int | None = None) -> str:
    """One column per model, one row per metric, values in percent.

    Models side by side make the comparison with the `simple` baseline the first thing a reader
    sees; the query counts underneath say what the percentages are of, and a warning line follows
    when there are fewer than 10 evaluation items (``num_items``) or 50 queries.
    """
    names = list(results)
    width = max(12, *(len(n) + 2 for n in names))
    header = f"{'metric (%)':<14}" + "".join(f"{n:>{width}}" for n in names)
    lines = [header, "-" * len(header)]
    percent = {n: in_percent(results[n]) for n in names}
    for key, label in metric_rows(k):
        cells = "".join(_cell(percent[n].get(key), width) for n in names)
        lines.append(f"{label:<14}{cells}")
    counts = "".join(f"{results[n].get('num_queries', '-'):>{width}}" for n in names)
    lines.append(f"{'queries':<14}{counts}")
    # a row without a count (an untrained row read back from training_stats.csv) says nothing here
    queries = min((int(r["num_queries"]) for r in results.values() if "num_queries" in r), default=0)
    if queries < MIN_QUERIES or (num_items is not None and num_items < MIN_ITEMS):
        items = "" if num_items is None else f"{num_items} items, "
        lines.append(f"warning: only {items}{queries} queries: too few for these numbers to mean "
                     f"much (want at least {MIN_ITEMS} items and {MIN_QUERIES} queries)")
    return "\n".join(lines)


def _cell(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.1f}"
