"""The training curves of a run: `train_log.csv` (one row a step) and `train_log.png` drawn from it.

The CSV is appended to as training goes, so a resumed run's file holds the whole curve; rows of
steps after the checkpoint it resumes from are dropped first (those steps are trained again).
The plot is drawn with matplotlib's Agg canvas, imported only here, so training needs no display.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TRAIN_LOG_CSV = "train_log.csv"
TRAIN_LOG_PNG = "train_log.png"
COLUMNS = ("step", "train_loss", "avg_train_loss", "held_out_loss", "learning_rate", "tokens_per_second",
           "elapsed_seconds")


@dataclass(frozen=True)
class Row:
    step: int
    train_loss: float | None
    avg_train_loss: float | None
    held_out_loss: float | None
    learning_rate: float | None
    tokens_per_second: float | None
    elapsed_seconds: float


def _cell(value) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6g}"


class TrainLog:
    """Appends one row a step to `run_folder/train_log.csv`, starting after `resume_step`."""

    def __init__(self, run_folder: Path, *, resume_step: int):
        self.path = Path(run_folder) / TRAIN_LOG_CSV
        try:
            rows = read_rows(self.path) if self.path.is_file() else None
        except (ValueError, KeyError, TypeError):
            log.warning("%s is not a training log this program wrote: starting it again", self.path)
            rows = None
        kept = [row for row in rows or [] if row.step <= resume_step]
        if rows is None or len(kept) != len(rows):
            self._rewrite(kept)
        self._file = open(self.path, "a", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)

    def _rewrite(self, rows: list[Row]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        writer.writerows([_cell(getattr(row, name)) for name in COLUMNS] for row in rows)
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        os.replace(partial, self.path)

    def write(self, row: Row) -> None:
        self._writer.writerow([_cell(getattr(row, name)) for name in COLUMNS])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_rows(path: Path) -> list[Row]:
    def number(text: str, kind=float):
        return kind(text) if text else None

    with open(path, encoding="utf-8", newline="") as file:
        return [
            Row(int(r["step"]), number(r["train_loss"]), number(r["avg_train_loss"]), number(r["held_out_loss"]),
                number(r["learning_rate"]), number(r["tokens_per_second"]), float(r["elapsed_seconds"]))
            for r in csv.DictReader(file)
        ]


def _trailing_mean(values: list[float], span: int) -> list[float]:
    """Each value averaged with up to span - 1 before it: smooth, and not lagging like gpt_2_simple's running average."""
    sums = [0.0]
    for value in values:
        sums.append(sums[-1] + value)
    return [(sums[i + 1] - sums[max(0, i + 1 - span)]) / min(span, i + 1) for i in range(len(values))]


def _zoom_past_the_first_drop(axes, trained: list[Row], evaluated: list[Row]) -> None:
    """Scale the loss axis to the steps after the first 5%: the drop from the base model's loss
    would otherwise flatten the part where over-fitting shows (the start is cut off at the top)."""
    if not trained:
        return
    after = trained[-1].step * 0.05
    losses = [r.train_loss for r in trained if r.step >= after] + [r.held_out_loss for r in evaluated if r.step >= after]
    losses = [x for x in losses if math.isfinite(x)]
    if len(losses) < 2:
        return
    low, high = min(losses), max(losses)
    margin = max(0.05, 0.15 * (high - low))
    axes.set_ylim(max(0.0, low - margin), high + margin)


def plot_curves(csv_path: Path, png_path: Path, *, title: str, best_step: int | None = None,
                stopped_at: int | None = None) -> Path | None:
    """Draw training and held-out loss against step, the best evaluation and an early stop marked.

    Returns the PNG's path, or None (with a warning) when matplotlib is missing: the CSV is enough.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed, so no %s: pip install -r requirements-ml.txt", png_path.name)
        return None
    rows = read_rows(csv_path)
    trained = [row for row in rows if row.train_loss is not None]
    evaluated = [row for row in rows if row.held_out_loss is not None]
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if trained:
        axes.plot([r.step for r in trained], [r.train_loss for r in trained], color="tab:blue", alpha=0.25,
                  linewidth=0.8, label="training loss (each step)")
        span = max(1, len(trained) // 40)
        axes.plot([r.step for r in trained], _trailing_mean([r.train_loss for r in trained], span), color="tab:blue",
                  linewidth=1.5, label=f"training loss (mean of the last {span} steps)")
    if evaluated:
        axes.plot([r.step for r in evaluated], [r.held_out_loss for r in evaluated], color="tab:orange",
                  marker="o", markersize=3, linewidth=1.5, label="held-out loss")
    best = next((r for r in evaluated if r.step == best_step), None)
    if best is not None:
        axes.plot([best.step], [best.held_out_loss], marker="*", markersize=14, color="tab:green", linestyle="none",
                  label=f"best held-out loss {best.held_out_loss:.3f} (step {best.step}, kept)")
    if stopped_at is not None:
        axes.axvline(stopped_at, color="tab:red", linestyle="--", linewidth=1, label=f"stopped early at step {stopped_at}")
    _zoom_past_the_first_drop(axes, trained, evaluated)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    partial = png_path.with_name(f".{png_path.name}.partial.png")
    figure.savefig(partial, format="png")
    os.replace(partial, png_path)
    return png_path
