"""The report as a picture: one panel per benchmark and unit, a bar per figure.

Each row of the table is a group of bars: osctl (blue, red when it misses a goal), the peer
(grey) and the floor (green), each with its spread as a whisker; a goal is a black tick on
osctl's bar. Panels whose values span more than 30x use a log scale. Needs matplotlib (the
``bench`` extra); bench/run installs it on first use.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

SCALE = {"s": (1.0, "seconds"), "B": (1e-3, "KB"), "%": (1.0, "% of a core"), "MB": (1.0, "MB")}
COLOURS = {"osctl": "#1f77b4", "missed": "#d62728", "peer": "#9e9e9e", "floor": "#2ca02c"}


def panels(report: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(title, unit, rows) per section and unit, in the report's order."""
    found: list[tuple[str, str, list[dict[str, Any]]]] = []
    for section in report["sections"]:
        by_unit: dict[str, list[dict[str, Any]]] = {}
        for row in section.get("rows") or []:
            by_unit.setdefault(row["unit"], []).append(row)
        for unit, rows in by_unit.items():
            found.append((section["name"], unit, rows))
    return found


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = panels(report)
    if not groups:
        return
    cols = 2
    rows_n = (len(groups) + cols - 1) // cols
    heights = [max(len(rows) for _t, _u, rows in groups[i:i + cols]) for i in range(0, len(groups), cols)]
    fig, axes = plt.subplots(rows_n, cols, figsize=(16, 1.6 + sum(0.62 * h + 0.9 for h in heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (name, unit, rows) in zip(axes.flat, groups):
        draw(ax, name, unit, rows)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[k]) for k in ("osctl", "missed", "peer", "floor")]
    fig.legend(handles, ["osctl", "osctl, goal missed", "peer (same run)", "floor"], loc="upper center", ncol=4,
               frameon=False, bbox_to_anchor=(0.5, 0.985))
    quick = " (--quick: not for quoting)" if report.get("quick") else ""
    fig.suptitle(f"osctl bench/run, {report['date']}, {report['total_seconds']:.0f} s on {report['cpus']} cores"
                 f"{quick}; whiskers: min..max; tick: goal", y=0.998)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw(ax: Any, name: str, unit: str, rows: list[dict[str, Any]]) -> None:
    factor, label = SCALE.get(unit, (1.0, unit))
    height = 0.26
    values = []
    for index, row in enumerate(rows):
        y = len(rows) - 1 - index
        for offset, key in ((height, "osctl"), (0.0, "peer"), (-height, "floor")):
            fig = row.get(key)
            if not fig:
                continue
            colour = COLOURS["missed" if key == "osctl" and row.get("met") is False else key]
            median, low, high = (fig[k] * factor for k in ("median", "low", "high"))
            ax.barh(y + offset, median, height=height, color=colour,
                    xerr=[[median - low], [high - median]] if fig["runs"] > 1 else None, capsize=2)
            values += [v for v in (median, low, high) if v > 0]
        for goal in row.get("goals") or []:
            ax.plot([goal["limit"] * factor] * 2, [y + height / 2, y + 1.5 * height], color="black", lw=2)
            values.append(goal["limit"] * factor)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["name"].strip() for r in reversed(rows)], fontsize=8)
    ax.set_title(f"{name} ({label})", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    if values and max(values) / max(min(values), 1e-12) > 30:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        plain = FuncFormatter(one_two_five)  # 0.1, 0.2, 0.5, 1 ...: readable and never crowded
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
    ax.grid(axis="x", alpha=0.3)


def one_two_five(value: float, _position: int) -> str:
    """A log axis label at 1, 2 and 5 times a power of ten, none elsewhere."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (1, 2, 5) else ""
