"""Search results a person reads and a script parses: one row per (query, rank).

Columns (CSV header and JSON keys, in this order): query (the photo's path), rank (1 = nearest),
item, distance (Euclidean, between embeddings), path (the gallery image's file) and same (``file``
when the gallery image is the query's own file, ``identical`` when it is another file at distance
0, else empty): a search that finds the photo itself should say so rather than look like a hit.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from common.atomic import atomic_write_text
from common.errors import UserError

RESULT_SUFFIXES = (".csv", ".json")


@dataclass(frozen=True)
class ResultRow:
    """One neighbour of one query."""

    query: str
    rank: int
    item: str
    distance: float
    path: str
    same: str


COLUMNS = tuple(f.name for f in fields(ResultRow))


def result_rows(queries: Sequence[Path], items: Sequence[str], paths: Sequence[str],
                distances: np.ndarray, indices: np.ndarray) -> list[ResultRow]:
    """Rows of every query's neighbours; `indices` (Q, k) index `items` and `paths`."""
    rows = []
    for query, dists, idx in zip(queries, distances, indices):
        for rank, (dist, j) in enumerate(zip(dists, idx), 1):
            rows.append(ResultRow(str(query), rank, items[j], round(float(dist), 6), paths[j],
                                  _sameness(query, paths[j], float(dist))))
    return rows


def _sameness(query: Path, found: str, distance: float) -> str:
    try:
        if os.path.samefile(query, found):
            return "file"
    except OSError:  # a gallery file deleted since its index was built
        pass
    return "identical" if distance == 0.0 else ""


def format_results(rows: Sequence[ResultRow]) -> str:
    """Per query a header line, then rank, item, distance, path and any same-image mark."""
    lines: list[str] = []
    for row in rows:
        if row.rank == 1:
            lines.append(f"{row.query}:")
        mark = {"file": "  <- the query's own file", "identical": "  <- identical image"}.get(row.same, "")
        lines.append(f"  {row.rank:>3}  {row.item:<24} {row.distance:8.4f}  {row.path}{mark}")
    return "\n".join(lines)


def results_format(path: Path) -> str:
    """".csv" or ".json" from `path`'s suffix; checked before any work so a typo costs nothing."""
    suffix = path.suffix.lower()
    if suffix not in RESULT_SUFFIXES:
        raise UserError(f"--results {path}: unknown file type {suffix or '(none)'}; end the name "
                        "in .csv or .json")
    return suffix


def write_results(path: Path, rows: Sequence[ResultRow]) -> None:
    """CSV or JSON (a list of objects) by `path`'s suffix, written atomically."""
    if results_format(path) == ".json":
        text = json.dumps([asdict(row) for row in rows], indent=1)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
        text = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
