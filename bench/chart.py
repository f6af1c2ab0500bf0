"""The benchmark's chart (PNG): the speed-up over Orthanc per row, and the scale curves.

    .venv/bin/python -m bench.chart bench/results/<run>.json [--scale <a bench.scale result>]

`bench.run` draws it after every run. A `bench.scale` result adds, per backend, the latency and
the index reads (SQLite rows, DynamoDB items) of each request against the number of studies.
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


def _scale_panel(axes: Any, runs: list[dict[str, Any]], figure: str, label: str) -> None:
    """One backend's `figure` per request (a line each) against the number of studies."""
    runs = sorted(runs, key=lambda run: run["studies"])
    for index, request in enumerate(runs[0]["requests"]):
        points = [(run["studies"], figure_of(run["requests"][index], figure)) for run in runs]
        axes.plot(*zip(*points, strict=True), marker="o", label=request["id"])
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("studies indexed", fontsize=8)
    axes.set_ylabel(label, fontsize=8)
    axes.set_title(f"{runs[0]['backend']}: {label} per request", fontsize=9)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=6)


def figure_of(request: dict[str, Any], figure: str) -> float:
    """Median ms, or what the request read from the index (SQLite rows; DynamoDB items)."""
    if figure == "median_ms":
        return request["median_ms"]
    reads = request["reads"]
    return max(1, reads["rows"] if "rows" in reads else reads["items_read"])  # log axis: ≥ 1


def draw(result: dict[str, Any], out: Path, scale: dict[str, Any] | None = None) -> Path:
    """Write the chart of a `bench.run` result (and a `bench.scale` result) to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    backends: dict[str, list[dict[str, Any]]] = {}
    for run in scale["runs"] if scale else []:
        backends.setdefault(run["backend"], []).append(run)
    top = 0.28 * sum(1 for row in result["rows"] if row.get("speedup")) + 2
    figure = pyplot.figure(figsize=(10, top + 3.5 * len(backends)), layout="constrained")
    parts = figure.subfigures(
        1 + bool(backends),
        1,
        height_ratios=[top] + [3.5 * len(backends)] * bool(backends),
        squeeze=False,
    )[:, 0]
    _speedup_panel(parts[0].subplots(), result)
    if backends:
        panels = parts[1].subplots(len(backends), 2, squeeze=False)
        for line, runs in zip(panels, backends.values(), strict=True):
            _scale_panel(line[0], runs, "median_ms", "median ms")
            _scale_panel(line[1], runs, "reads", "index reads")
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
