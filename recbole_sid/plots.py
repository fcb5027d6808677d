"""PNG plots of a leaderboard run: :func:`plot_data` reads ``<out>/<dataset>/cells/*.json`` and computes every
number that is drawn (test metrics through :func:`recbole_sid.leaderboard.collect`, so bars and error bars are the
tables' mean and 95 % t-interval over the ok cells; per-level codebook usage of the tokenizer models; per-epoch training
curves averaged over the seeds that ran each epoch), and :func:`write_plots` draws them with matplotlib's object API
(``Figure`` + ``FigureCanvasAgg``, so importing this module or plotting never changes the user's pyplot backend)
into ``<out>/<dataset>/plots/``, each PNG written to a temporary file beside its target and renamed into place.
"""
from __future__ import annotations

import importlib
import math
from pathlib import Path

from recbole_sid.atomic_io import atomic_write
from recbole_sid.leaderboard import CTR_METRICS, PARTS, TOPK_METRICS, _mean_std, collect, read_cells

#: bars of ``metrics_topk.png``: keys of :func:`collect`'s rows, one bar per key in each model's group
TOPK_BARS = [f"{m}{part}" for part in ("_warm", "_cold") for m in TOPK_METRICS]
#: subplots of ``metrics_ctr.png``: one per CTR metric, bars for all / warm / cold test users
CTR_BARS = {m: [f"{m}{part}" for part in PARTS["ctr"]] for m in CTR_METRICS}
CURVES = ("train_loss", "valid_score")
TASK_TITLES = {"topk": "top-k", "ctr": "CTR", "seq": "sequential"}


class PlotDependencyError(ImportError):
    """matplotlib, needed to draw the plots, is not installed."""


def _ok_cells(out: Path, dataset: str, model: str) -> list[dict]:
    """The finished (status ok) cells of ``model`` on ``dataset``, in seed order."""
    return [c for c in read_cells(out, dataset, model) if c.get("status") == "ok"]


def _valid_metric(cell: dict) -> str | None:
    """The metric behind a cell's ``valid_score``: its config's ``valid_metric``, else the one best result it equals."""
    configured = (cell.get("config") or {}).get("valid_metric")
    if configured:
        return str(configured).lower()
    best, results = cell.get("best_valid_score"), cell.get("best_valid_result") or {}
    matches = [k for k, v in results.items() if best is not None and v == best]
    return matches[0] if len(matches) == 1 else None


def _curve(cells: list[dict], name: str) -> list[tuple[int, float]]:
    """``(epoch, mean over the seeds that ran that epoch)`` for curve ``name``, epochs in order."""
    per_epoch: dict[int, list[float]] = {}
    for cell in cells:
        for epoch, value in ((cell.get("curves") or {}).get(name) or {}).items():
            if isinstance(value, (int, float)) and not math.isnan(value):
                per_epoch.setdefault(int(epoch), []).append(float(value))
    return [(epoch, _mean_std(values)[0]) for epoch, values in sorted(per_epoch.items())]


def _level_usage(cells: list[dict]) -> list[tuple[float, float]]:
    """Per item-SID level (1, 2, ...): (mean, sample std) over seeds of the fraction of codes used."""
    usage: dict[int, list[float]] = {}
    for cell in cells:
        for level in ((cell.get("sid_quality") or {}).get("items") or {}).get("levels", []):
            usage.setdefault(int(level["level"]), []).append(level["usage"])
    return [_mean_std(usage.get(level, [])) for level in range(1, max(usage, default=0) + 1)]


def _with_ci(row: dict, key: str) -> tuple:
    """``(mean, half-width of the 95 % t-interval)`` of a table row's metric (the tables' numbers)."""
    return (row[key][0], row.get(f"{key}_ci95"))


def plot_data(out: Path, dataset: str, models: list[str]) -> dict:
    """Every number that :func:`write_plots` draws, keyed by plot (``metrics_topk``, ``codebook_usage``, ...)."""
    data: dict = {}
    for row in collect(Path(out), dataset, models):
        if not row["seeds"]:
            continue  # no cells, or only failed ones
        model, task = row["model"], row["task"]
        if task in ("topk", "seq"):  # sequential rows have the top-k metrics (all / warm / cold targets)
            data.setdefault(f"metrics_{task}", {})[model] = {key: _with_ci(row, key) for key in TOPK_BARS}
        else:
            data.setdefault("metrics_ctr", {})[model] = {key: _with_ci(row, key) for bars in CTR_BARS.values()
                                                         for key in bars}
        cells = _ok_cells(Path(out), dataset, model)
        usage = _level_usage(cells)
        if usage:
            data.setdefault("codebook_usage", {})[model] = usage
        curves = {name: _curve(cells, name) for name in CURVES}
        if any(curves.values()):
            metrics = {_valid_metric(c) for c in cells}
            curves["valid_metric"] = metrics.pop() if len(metrics) == 1 else None
            data.setdefault(f"curves_{task}", {})[model] = curves
    return data


def _import_matplotlib():
    """``(Figure, FigureCanvasAgg)``, or PlotDependencyError naming the package to install."""
    try:
        importlib.import_module("matplotlib")  # the package first: a missing or blocked one must fail here
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotDependencyError(
            "recbole_sid.plots needs matplotlib, which is not installed; install the plot extra: "
            "pip install 'recbole-sid[plot]' (or pip install matplotlib)") from exc
    return Figure, FigureCanvasAgg


def _nan(value) -> float:
    """``None`` -> NaN (matplotlib draws no bar), anything else -> float."""
    return math.nan if value is None else float(value)


def _style(i: int) -> dict:
    """Color (default cycle ``C0``..``C9``) and, past ten series, a dashed line / hatch so none look alike."""
    return {"color": f"C{i % 10}", "dashed": (i // 10) % 2 == 1}


def _bars(ax, groups: list[str], series: dict[str, list[tuple]], ylabel: str, styles: dict | None = None) -> None:
    """Grouped bars on ``ax``: one group per entry of ``groups``, one bar (mean ± error) per ``series`` key."""
    width = 0.8 / max(len(series), 1)
    for i, (name, pairs) in enumerate(series.items()):
        style = (styles or {}).get(name) or _style(i)
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [_nan(p[0]) for p in pairs]
        errors = [_nan(p[1]) for p in pairs]
        ax.bar(xs, heights, width, yerr=errors, capsize=2, label=name, color=style["color"],
               hatch="//" if style["dashed"] else None, edgecolor="white" if style["dashed"] else None,
               error_kw={"linewidth": 0.8})
    ax.set_xticks(range(len(groups)))
    many = len(groups) > 4 or max((len(g) for g in groups), default=0) > 10
    ax.set_xticklabels(groups, rotation=30 if many else 0, ha="right" if many else "center")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _save(fig, canvas_cls, path: Path) -> Path:
    """Render ``fig`` to ``path`` as PNG through a temporary file in the same folder, then free the figure."""
    canvas_cls(fig)
    try:
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=120)
    finally:
        fig.clear()
    return path


def _metrics_figure(Figure, dataset: str, task: str, rows: dict):
    """Grouped bar chart of one task's test metrics (one group per model)."""
    models = list(rows)
    panels = CTR_BARS if task == "ctr" else {"": TOPK_BARS}
    width = min(14.0, max(6.0, 1.1 * len(models) + 2))
    fig = Figure(figsize=(width * (1.6 if task == "ctr" else 1), 4.5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, keys) in zip(axes, panels.items()):
        series = {key.replace("_", " ") + ("" if "_" in key else " (all)"): [rows[m][key] for m in models]
                  for key in keys}
        _bars(ax, models, series, metric or "test metric")
        ax.legend(fontsize="small")
    fig.suptitle(f"{dataset}: {TASK_TITLES[task]} test metrics (mean ± 95 % CI over cells)")
    return fig


def _usage_figure(Figure, dataset: str, usage: dict, styles: dict):
    """Per-level codebook usage: one group per SID level, one bar per tokenizer model."""
    levels = max(len(v) for v in usage.values())
    fig = Figure(figsize=(min(12.0, max(6.0, 0.4 * levels * len(usage) + 3)), 4.5), layout="constrained")
    ax = fig.subplots()
    series = {model: list(v) + [(None, None)] * (levels - len(v)) for model, v in usage.items()}
    _bars(ax, [f"level {i}" for i in range(1, levels + 1)], series, "codebook usage (codes used / codebook size)",
          styles)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"{dataset}: item SID codebook usage per level (mean ± std over seeds)")
    return fig


def _curves_figure(Figure, dataset: str, task: str, curves: dict, styles: dict):
    """Train loss and validation score per epoch, one line per model (mean over the seeds that ran the epoch)."""
    fig = Figure(figsize=(13, 4.5), layout="constrained")
    loss_ax, valid_ax = fig.subplots(1, 2)
    metrics = {c["valid_metric"] for c in curves.values()}
    same = len(metrics) == 1 and None not in metrics
    for model, c in curves.items():
        for ax, name in ((loss_ax, "train_loss"), (valid_ax, "valid_score")):
            if c[name]:
                label = model if same or name == "train_loss" else f"{model} ({c['valid_metric'] or '?'})"
                ax.plot([e for e, _ in c[name]], [v for _, v in c[name]], marker=".", markersize=3, label=label,
                        color=styles[model]["color"], linestyle="--" if styles[model]["dashed"] else "-")
    losses = [v for c in curves.values() for _, v in c["train_loss"]]
    log = bool(losses) and min(losses) > 0 and max(losses) / min(losses) > 20  # models' losses differ in scale
    if log:
        loss_ax.set_yscale("log")
    loss_ax.set_ylabel("train loss (sum over batches" + (", log scale)" if log else ")"))
    valid_ax.set_ylabel(f"valid score = valid_metric ({metrics.pop()})" if same
                        else "valid score (each model's valid_metric, in the legend)")
    from matplotlib.ticker import MaxNLocator

    for ax, title in ((loss_ax, "training loss"), (valid_ax, "validation score")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
    valid_ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"{dataset}: {TASK_TITLES[task]} training curves (mean over the seeds that ran each epoch)")
    return fig


def write_plots(out: Path, dataset: str, models: list[str]) -> list[Path]:
    """Draw :func:`plot_data` into ``<out>/<dataset>/plots/*.png``; returns the files written."""
    Figure, canvas_cls = _import_matplotlib()
    data = plot_data(out, dataset, models)
    folder = Path(out) / dataset / "plots"
    # one color per model, the same in every plot (models in display order)
    shown = [model for model in models if any(model in plot for plot in data.values())]
    styles = {model: _style(i) for i, model in enumerate(shown)}
    written = []
    for task in ("topk", "ctr", "seq"):
        if data.get(f"metrics_{task}"):
            fig = _metrics_figure(Figure, dataset, task, data[f"metrics_{task}"])
            written.append(_save(fig, canvas_cls, folder / f"metrics_{task}.png"))
    if data.get("codebook_usage"):
        written.append(_save(_usage_figure(Figure, dataset, data["codebook_usage"], styles), canvas_cls,
                             folder / "codebook_usage.png"))
    curve_tasks = [task for task in ("topk", "ctr", "seq") if data.get(f"curves_{task}")]
    for task in curve_tasks:
        name = f"curves_{task}.png" if len(curve_tasks) > 1 else "curves.png"
        written.append(_save(_curves_figure(Figure, dataset, task, data[f"curves_{task}"], styles), canvas_cls,
                             folder / name))
    return written
