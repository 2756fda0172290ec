"""summary.json: the one file every run leaves behind with its final metrics and checkpoints."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch


def to_number(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def metrics_to_floats(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: to_number(v) for k, v in sorted(metrics.items())}


def write_summary(output_dir: Path, summary: dict[str, Any], *, name: str = "summary.json") -> Path:
    """Write ``summary`` as JSON to ``<output_dir>/<name>`` through a temporary file next to it,
    so a reader never sees half a file and no other file is touched."""
    path = Path(output_dir) / name
    tmp = path.with_name(f".{name}.partial-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_table(output_dir: Path, name: str, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write rows as ``<name>.csv`` and ``<name>.md`` (a GitHub table) in the run directory."""
    import csv

    output_dir = Path(output_dir)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    csv_path = output_dir / f"{name}.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: to_number(r.get(c, "")) for c in columns} for r in rows)
    md_path = output_dir / f"{name}.md"
    md_path.write_text(markdown_table(rows, columns))
    return csv_path, md_path


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0]) if rows else []

    def fmt(v: Any) -> str:
        v = to_number(v)
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"
