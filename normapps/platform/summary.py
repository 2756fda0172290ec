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


def table_cell(value: Any) -> Any:
    """One W&B table cell: numbers stay numbers, missing values are None (W&B's "no value",
    accepted in any column), everything else becomes a string, so a column never mixes
    numbers and strings (W&B refuses such rows)."""
    if isinstance(value, torch.Tensor):
        value = to_number(value)
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return float(value) if isinstance(value, float) else value
    return str(value)


def log_table(loggers: list, name: str, rows: list[dict[str, Any]]) -> None:
    """Log rows as a W&B table on every WandbLogger in ``loggers`` (others have no tables).

    Cells are typed per column (:func:`table_cell`) and W&B is told to allow what mixing is
    left; a failure only warns: the CSV/Markdown copy from :func:`write_table` is the record,
    and a table must never cost a run its summary.json (issue 12)."""
    from pytorch_lightning.loggers import WandbLogger

    wandb_loggers = [lg for lg in loggers
                     if isinstance(lg, WandbLogger) or type(lg).__name__ == "WandbLogger"]
    if not wandb_loggers or not rows:
        return
    import wandb

    from normapps.platform.logging import warn_logger_failure

    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    data = [[table_cell(r.get(c)) for c in columns] for r in rows]
    for lg in wandb_loggers:
        try:
            lg.experiment.log({name: wandb.Table(columns=columns, data=data, allow_mixed_types=True)})
        except Exception as err:  # noqa: BLE001 - a logger must never end a run
            warn_logger_failure(lg, f"table {name!r}", err)


def publish_table(output_dir: Path, loggers: list, name: str, rows: list[dict[str, Any]], *,
                  key: str | None = None) -> tuple[Path, Path]:
    """A run's table, the one way every task records one: ``<name>.csv`` and ``<name>.md`` in
    the run directory (:func:`write_table`) and a W&B table under ``key`` (default ``name``) on
    every W&B logger (:func:`log_table`). Returns the CSV and Markdown paths."""
    paths = write_table(output_dir, name, rows)
    log_table(loggers, key or name, rows)
    return paths
