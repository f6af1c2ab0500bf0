"""The benchmark's Markdown table, made from the result file's rows."""

from __future__ import annotations

from typing import Any


def _number(value: float) -> str:
    """A figure with about three significant digits."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _cells(result: dict[str, Any]) -> list[str]:
    """Median, p95 and rate cells of one server in one row."""
    if result.get("na"):
        return [f"n/a ({result.get('status') or 'error'})", "", ""]
    if "value" in result:
        return [f"{_number(result['value'])} MiB", "", ""]
    rate = []
    if "instances_per_s" in result:
        rate.append(f"{_number(result['instances_per_s'])} inst/s")
    if "mb_per_s" in result:
        rate.append(f"{_number(result['mb_per_s'])} MB/s")
    return [_number(result["median_ms"]), _number(result["p95_ms"]), ", ".join(rate)]


def markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown table: per server median ms, p95 ms, rate; then the speed-up."""
    names = list(result["servers"])
    both = {"orthanc", "ours"} <= set(names)
    header = ["Row"]
    for name in names:
        header += [f"{name} median ms", f"{name} p95 ms", f"{name} rate"]
    if both:
        header.append("speed-up")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        cells = [row["title"]]
        for name in names:
            cells += _cells(row["results"][name])
        if both:
            cells.append("" if row["speedup"] is None else f"{row['speedup']:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        f"Speed-up: {result['speedup']}. Best median over {result['settings']['rounds']} rounds of "
        f"{result['settings']['repeats']} requests after {result['settings']['warmup']} warm-up; "
        "MB = 10^6 bytes.",
    ]
    return "\n".join(lines + notes)
