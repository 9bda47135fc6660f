"""Human-readable evaluation report: a markdown table and PNG plots (matplotlib, Agg canvas)."""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ovdet import file_mark
from ovdet.evaluation.result import EvalResult
from ovdet.safe_write import atomic_write_text, atomic_writer, check_output_folder

COLORS = {"novel": "tab:orange", "base": "tab:blue", "other": "tab:gray"}
HEADLINE = (
    "AP50_novel", "AP50_base", "AP50_all", "AP", "AP_novel", "AP_base", "AP50", "AP75",
    "APr", "APc", "APf", "APs", "APm", "APl",
)  # fmt: skip
INFO = ("protocol", "split", "num_images", "num_predictions", "max_dets")
AP50_PNG, PR_PNG, REPORT_MD = "ap50_per_category.png", "pr_novel.png", "report.md"


def check_report_folder(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Refuse, before any work, a report folder that is a file or holds a report.md or plot ovdet did not write."""
    out = check_output_folder(out_dir, "--report")
    for name in (REPORT_MD, AP50_PNG, PR_PNG):
        file_mark.check_replaceable_file(out / name, "--report", overwrite)
    return out


def write_report(result: EvalResult | dict, out_dir: str | Path, title: str = "ovdet evaluation") -> list[Path]:
    """Write report.md, the per-category AP50 bars and the novel PR curves into `out_dir`.

    result: an EvalResult (all plots) or a metrics dict such as metrics.json (no PR curves:
    they need the precision arrays). Templates and scoring mode are reported from
    `metrics["meta"]`, where the caller records what produced the predictions.
    Returns the paths written.
    """
    metrics = result.metrics if isinstance(result, EvalResult) else result
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(metrics.get("per_category", []), key=lambda r: (r["split"] != "novel", r["split"], r["name"]))
    written, notes = [], []
    if any(r["AP50"] >= 0 for r in rows):
        written.append(_plot_ap50(rows, metrics, out / AP50_PNG))
    else:
        notes.append("No category has ground truth: no AP50 plot.")
    if not isinstance(result, EvalResult):
        notes.append("Precision arrays not given (report built from a metrics dict): no PR curves.")
    elif any(r["split"] == "novel" and r["AP"] >= 0 for r in rows):
        written.append(_plot_pr(result, rows, out / PR_PNG))
    else:
        notes.append("No novel category has ground truth: no PR curves.")
    md = out / REPORT_MD
    atomic_write_text(md, file_mark.marked_text(md, _markdown(title, metrics, rows, [p.name for p in written], notes)))
    return [md, *written]


def _markdown(title: str, metrics: dict, rows: list[dict], plots: list[str], notes: list[str]) -> str:
    lines = [f"# {title}", "", "## Setup", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {metrics[k]} |" for k in INFO if k in metrics]
    lines += [f"| {k} | {_text(v)} |" for k, v in metrics.get("meta", {}).items()
              if k not in INFO and k != file_mark.MARK_KEY]  # each setting once: the value the scoring used
    lines += ["", "## Results (percent; – means no ground truth)", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {_fmt(metrics[k])} |" for k in HEADLINE if k in metrics]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if k.startswith("AR") and isinstance(v, float)]
    for item in [f"![{name}]({name})" for name in plots] + [f"*{n}*" for n in notes]:
        lines += ["", item]
    lines.append("")
    freq = any("frequency" in r for r in rows)
    head = "| category | id | split |" + (" frequency |" if freq else "") + " #gt | AP50 | AP |"
    lines += ["## Per category", "", head, "|---|---:|---|" + ("---|" if freq else "") + "---:|---:|---:|"]
    for r in rows:
        f = f" {r.get('frequency', '')} |" if freq else ""
        lines.append(f"| {r['name']} | {r['id']} | {r['split']} |{f} {r['num_gt']} | {_fmt(r['AP50'])} | {_fmt(r['AP'])} |")
    return "\n".join(lines) + "\n"


def _plot_ap50(rows: list[dict], metrics: dict, path: Path) -> Path:
    """Bars of AP50 per category (with ground truth), best first, coloured by split."""
    rows = sorted((r for r in rows if r["AP50"] >= 0), key=lambda r: -r["AP50"])
    fig = Figure(figsize=(min(max(6.0, 0.22 * len(rows) + 2), 40), 4.5), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(rows)), [r["AP50"] for r in rows], color=[COLORS[r["split"]] for r in rows])
    if len(rows) <= 120:
        ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=90, fontsize=7)
    else:
        ax.set_xticks([])
    for group in ("novel", "base"):
        mean = metrics.get(f"AP50_{group}", -1.0)
        if mean >= 0:
            ax.axhline(mean, color=COLORS[group], linestyle="--", linewidth=1)
    present = sorted({r["split"] for r in rows}, key=list(COLORS).index)
    labels = [f"{g} (AP50 {_fmt(metrics.get(f'AP50_{g}', -1.0))})" if g != "other" else g for g in present]
    ax.legend([Patch(color=COLORS[g]) for g in present], labels, loc="upper right")
    ax.set(ylabel="AP50 (%)", ylim=(0, 105), xlim=(-0.6, len(rows) - 0.4), title="AP50 per category")
    return _save_png(fig, path)


def _plot_pr(result: EvalResult, rows: list[dict], path: Path) -> Path:
    """Precision-recall at IoU 0.5 of every novel category with ground truth."""
    novel = [r for r in rows if r["split"] == "novel" and r["AP"] >= 0]
    fig = Figure(figsize=(8.5, 5.5), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["tab10" if len(novel) <= 10 else "tab20"]
    for i, r in enumerate(novel):
        recall, precision = result.pr_curve(r["id"], 0.5)  # [R], [R]
        ax.plot(recall, precision, color=cmap(i % cmap.N), linewidth=1.2, label=f"{r['name']} ({_fmt(r['AP50'])})")
    if len(novel) <= 20:  # beyond that a legend hides more than it tells
        fig.legend(fontsize=7, loc="outside right upper", title="novel (AP50)")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02), title="Novel categories, IoU 0.5")
    ax.grid(alpha=0.3)
    return _save_png(fig, path)


def _save_png(fig: Figure, path: Path) -> Path:
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, metadata={file_mark.MARK_KEY: file_mark.MARK_VALUE})
    return path


def _fmt(value: float) -> str:
    return "–" if value is None or value < 0 else f"{value:.1f}"


def _text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
