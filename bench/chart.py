"""The benchmark's chart (PNG): the speed-up over Orthanc per row, and the scale curves.

    .venv/bin/python -m bench.chart bench/results/<run>.json [--scale <a bench.scale result>]

`bench.run` draws the first panel after every run; `bench.scale` results, when given, add one
panel per backend with the latency of each request against the number of studies indexed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GOAL = 2.0  # issue 14's target for the rows it names; drawn as a guide, not asserted


def _speedup_panel(axes: Any, result: dict[str, Any]) -> None:
    """Horizontal bars of Orthanc's time ÷ ours, log scale, 1 (parity) and the goal marked."""
    rows = [row for row in result["rows"] if row.get("speedup")]
    titles = [row["title"] for row in rows]
    values = [row["speedup"] for row in rows]
    colours = ["#2a7ab0" if value >= 1 else "#c0504d" for value in values]
    positions = range(len(rows))
    axes.barh(positions, values, color=colours)
    axes.set_yticks(positions, titles, fontsize=7)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.axvline(GOAL, color="grey", linewidth=0.8, linestyle="--")
    for position, value in zip(positions, values, strict=True):
        axes.text(value, position, f" {value:.2f}×", va="center", fontsize=7)
    dataset = result["dataset"]
    axes.set_title(
        "Speed-up over Orthanc: its median time ÷ ours (peak RSS: its MiB ÷ ours);"
        " > 1: ours is better\n"
        f"{dataset['instances']} instances, {dataset['bytes'] / 1e6:.0f} MB, "
        f"{result['machine']['cpus']} CPUs, {result['started_utc']}",
        fontsize=9,
    )
    axes.set_xlabel("speed-up (log scale); dashed: 2× goal", fontsize=8)


def _scale_panel(axes: Any, backend: str, figures: dict[str, Any]) -> None:
    """Median latency per request against the number of studies, one line per request."""
    sizes = figures["sizes"]
    for request, by_size in figures["requests"].items():
        points = [(size, by_size[str(size)]["median_ms"]) for size in sizes if str(size) in by_size]
        axes.plot(*zip(*points, strict=True), marker="o", label=request)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("studies indexed", fontsize=8)
    axes.set_ylabel("median ms", fontsize=8)
    axes.set_title(f"Cost against archive size: {backend}", fontsize=9)
    axes.legend(fontsize=6)


def draw(result: dict[str, Any], out: Path, scale: dict[str, Any] | None = None) -> Path:
    """Write the chart of a `bench.run` result (and a `bench.scale` result) to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    backends = list(scale["backends"].items()) if scale else []
    rows = sum(1 for row in result["rows"] if row.get("speedup"))
    figure = pyplot.figure(figsize=(10, 0.28 * rows + 2 + 4 * bool(backends)), layout="constrained")
    grid = figure.add_gridspec(2 if backends else 1, max(1, len(backends)))
    _speedup_panel(figure.add_subplot(grid[0, :]), result)
    for column, (backend, figures) in enumerate(backends):
        _scale_panel(figure.add_subplot(grid[1, column]), backend, figures)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    pyplot.close(figure)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chart", description=__doc__.split("\n")[0]
    )
    parser.add_argument("result", type=Path, help="a bench.run result JSON")
    parser.add_argument("--scale", type=Path, help="a bench.scale result JSON")
    parser.add_argument("--out", type=Path, help="the PNG (default: the result's name, .png)")
    args = parser.parse_args(argv)
    result = json.loads(args.result.read_text())
    scale = json.loads(args.scale.read_text()) if args.scale else None
    out = draw(result, args.out or args.result.with_suffix(".png"), scale)
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
