"""Summarise a route-benchmark JSON as markdown tables.

Run the benchmark, then the report::

    .venv/bin/pytest benchmarks --benchmark-only --benchmark-json=out.json   # add --bench-large for N = 1e6
    .venv/bin/python benchmarks/report.py out.json

The first table has one row per bank size (N, d); each competitor's cell is its median time and, in
parentheses, that median over the floor's (the cost of reading the bank once on as many threads as the
competitor uses: ``floor`` or ``floor-1thread``). The last columns are smcs's speedup over numpy and over
faiss (their median over smcs's). The second table shows the thread-pool interference runs: smcs timed
right after a numpy (OpenBLAS) or faiss (its own libgomp) call, against smcs alone. The interleaved table
(``test_route_paired.py``) calls the competitors in turn and takes each round's ratio before the median,
the numbers to trust on a machine whose speed drifts between competitors' runs. The route-scoring table
(``test_route_scoring.py``) does the same for ``Router.route`` under each scorer of a fitted bank: each
scorer's median over the ``vote`` scorer's is what scoring adds to a route.

For a smoke test without timing, ``pytest benchmarks --benchmark-disable -q`` runs every body once.
Only the standard library is needed, so the report runs anywhere the JSON is.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

SMCS = "smcs"
SPEEDUP_OVER = ("numpy", "faiss-flat")
"""Competitors smcs's speedup is reported against."""


@dataclass(frozen=True)
class Result:
    """One benchmark of the JSON: a competitor on a bank size."""

    competitor: str
    n: int
    d: int
    kind: str
    median_s: float
    iqr_s: float
    rounds: int
    floor: str
    support: int
    disturbed_by: str | None


def load(path: Path) -> tuple[list[Result], dict]:
    """The route benchmarks of a ``--benchmark-json`` file (others are ignored), and its machine info."""
    data = json.loads(path.read_text())
    results = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "competitor" not in info:
            continue
        stats = bench["stats"]
        results.append(
            Result(
                competitor=info["competitor"],
                n=int(info["n"]),
                d=int(info["d"]),
                kind=info.get("kind", "topics"),
                median_s=float(stats["median"]),
                iqr_s=float(stats["iqr"]),
                rounds=int(stats["rounds"]),
                floor=info.get("floor", "floor"),
                support=int(info.get("support", 0)),
                disturbed_by=info.get("disturbed_by"),
            )
        )
    return results, data.get("machine_info", {})


def fmt_time(seconds: float) -> str:
    """Seconds as µs, ms or s with three significant digits."""
    for unit, scale in (("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        value = seconds / scale
        if value < 1000 or unit == "s":
            return f"{value:.3g} {unit}"
    raise AssertionError("unreachable")


def fmt_ratio(ratio: float) -> str:
    """A ratio as ``1.23×`` (``–`` when undefined)."""
    return "–" if math.isnan(ratio) else f"{ratio:.2f}×"


def size_label(n: int) -> str:
    """10**k as ``1ek``, other counts as they are."""
    exp = round(math.log10(n)) if n > 0 else 0
    return f"1e{exp}" if 10**exp == n else str(n)


def _ordered_unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else math.nan


def route_table(results: list[Result]) -> list[str]:
    """Markdown lines of the main table: median (×floor) per competitor, smcs's speedups."""
    plain = [r for r in results if r.disturbed_by is None]
    names = _ordered_unique(r.competitor for r in plain)  # run order = the benchmark's competitor order
    by_size: dict[tuple[int, int, str], dict[str, Result]] = defaultdict(dict)
    for r in plain:
        by_size[(r.n, r.d, r.kind)][r.competitor] = r
    speedups = [s for s in SPEEDUP_OVER if s in names]
    header = ["N", "d", "bank", "|I|", *names, *(f"smcs vs {s}" for s in speedups)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (n, d, kind), row in sorted(by_size.items()):
        cells = [size_label(n), str(d), kind, str(next(iter(row.values())).support)]
        for name in names:
            r = row.get(name)
            if r is None:
                cells.append("–")
                continue
            floor = row.get(r.floor)
            ratio = _ratio(r.median_s, floor.median_s if floor else None)
            cells.append(f"{fmt_time(r.median_s)} ({fmt_ratio(ratio)})")
        smcs_s = row[SMCS].median_s if SMCS in row else None
        for s in speedups:
            cells.append(fmt_ratio(_ratio(row[s].median_s if s in row else None, smcs_s)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def interference_table(results: list[Result]) -> list[str]:
    """Markdown lines of the interference table: smcs alone vs right after another thread pool ran."""
    disturbed = [r for r in results if r.disturbed_by is not None]
    if not disturbed:
        return []
    pools = _ordered_unique(r.disturbed_by for r in disturbed)
    alone = {(r.n, r.d, r.kind): r for r in results if r.competitor == SMCS}
    after: dict[tuple[int, int, str], dict[str, Result]] = defaultdict(dict)
    for r in disturbed:
        after[(r.n, r.d, r.kind)][r.disturbed_by] = r
    header = ["N", "d", "bank", "smcs alone", *(f"after {p}" for p in pools)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (n, d, kind), row in sorted(after.items()):
        base = alone.get((n, d, kind))
        cells = [size_label(n), str(d), kind, fmt_time(base.median_s) if base else "–"]
        for p in pools:
            r = row.get(p)
            ratio = _ratio(r.median_s if r else None, base.median_s if base else None)
            cells.append(f"{fmt_time(r.median_s)} ({fmt_ratio(ratio)})" if r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def noise_line(results: list[Result]) -> str:
    """The largest relative interquartile range among the timed results: how noisy the run was."""
    worst = max(results, key=lambda r: r.iqr_s / r.median_s if r.median_s else 0.0)
    return (
        f"Noise: largest IQR/median = {worst.iqr_s / worst.median_s:.0%} "
        f"({worst.competitor}, N={size_label(worst.n)} d={worst.d}, {worst.rounds} rounds)."
    )


def render(results: list[Result], machine_info: dict) -> str:
    """The whole markdown report."""
    cpu = machine_info.get("cpu", {})
    threads = machine_info.get("smcs_bench_threads", {})
    lines = [
        "### smcs route benchmark (median; ×floor in parentheses; |I| = support-set size)",
        "",
        f"CPU: {cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} logical cores. "
        f"Threads: {', '.join(f'{k} {v}' for k, v in threads.items()) or '?'}.",
        "",
        *route_table(results),
    ]
    extra = interference_table(results)
    if extra:
        title = "### Thread-pool interference (smcs timed right after another library's call)"
        lines += ["", title, "", *extra]
    lines += ["", noise_line(results)]
    foreign = machine_info.get("smcs_foreign_cpu_share")
    if foreign is not None:
        lines.append(
            f"Other processes used {foreign:.0%} of the machine's CPU time during the run"
            + (" (parallel timings are unreliable above a few %)." if foreign >= 0.05 else ".")
        )
    return "\n".join(lines)


def service_table(path: Path) -> list[str]:
    """Markdown lines for ``test_service.py``: per method, p50/p99 of one client and QPS of eight, then the
    interleaved table of ``test_route_vs_health``."""
    rows: dict[str, dict[str, object]] = defaultdict(dict)
    benches = json.loads(path.read_text()).get("benchmarks", [])
    for bench in benches:
        if not (bench.get("group") or "").startswith("service:") or bench.get("extra_info", {}).get("service_paired"):
            continue
        method = bench["params"]["method"]
        rows[method].update(bench.get("extra_info", {}))
    lines = []
    if rows:
        lines += [
            "### smcs service over loopback (15,000 × 384 bank, R = 15; health = bare unary call)",
            "",
            "| method | p50 (1 client) | p99 (1 client) | QPS (8 clients) |",
            "|---|---|---|---|",
        ]
        for method, info in rows.items():
            lines.append(f"| {method} | {info.get('p50_ms', '–')} ms | {info.get('p99_ms', '–')} ms | {info.get('qps', '–')} |")
    for info in (b["extra_info"] for b in benches if b.get("extra_info", {}).get("service_paired")):
        lines += [
            *([""] if lines else []),
            f"### Route vs health, interleaved ({info['n']:,} × {info['d']} bank, {info['clients']} clients, "
            f"{info['calls_per_client']} calls each a burst, {info['rounds']} rounds; medians, ratios per round)",
            "",
            "| method | QPS | p50 under load | QPS ÷ health |",
            "|---|---|---|---|",
        ]
        for method, qps in info["qps"].items():
            ratio = info["ratios"].get(f"{method}/health", 1.0)
            lines.append(f"| {method} | {qps} | {info['p50_ms'][method]} ms | {fmt_ratio(ratio)} |")
    return lines


ANSWER_FLOOR = "test_answer_transport_floor"
"""The answer table's floor: the same model requests over a bare HTTP session."""


def answer_table(path: Path) -> list[str]:
    """Markdown lines for ``test_answer.py``: each case's overhead p50/p99 (and route p50), the p50's ratio
    to the transport floor's, and the model calls of one answer (aggregations among them)."""
    rows = {
        bench["name"]: bench.get("extra_info", {})
        for bench in json.loads(path.read_text()).get("benchmarks", [])
        if bench.get("group") == "answer"
    }
    if not rows:
        return []
    floor = rows.get(ANSWER_FLOOR, {}).get("overhead_p50_ms")
    lines = [
        "### Answer overhead (wall time − the model delays; K = 7, n = 8)",
        "",
        "| case | overhead p50 | p99 | route p50 | p50 ×floor | model calls (aggregations) |",
        "|---|---|---|---|---|---|",
    ]
    for name, info in rows.items():
        p50 = info.get("overhead_p50_ms")
        ratio = fmt_ratio(_ratio(p50, floor))
        times = (p50, info.get("overhead_p99_ms"), info.get("route_p50_ms"))
        calls = f"{info['model_calls']} ({info['aggregation_calls']})" if "model_calls" in info else "–"
        cells = [name.removeprefix("test_answer_"), *("–" if ms is None else f"{ms} ms" for ms in times), ratio, calls]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def paired_table(path: Path) -> list[str]:
    """Markdown lines for ``test_route_paired.py``: per bank, the interleaved medians and the median per-round
    ratios (smcs, its unordered decision and the router over their floors, numpy and faiss over them), under
    a line naming the CPU."""
    data = json.loads(path.read_text())
    rows = [bench["extra_info"] for bench in data.get("benchmarks", []) if bench.get("extra_info", {}).get("paired")]
    if not rows:
        return []
    names = _ordered_unique(name for info in rows for name in info["medians_s"])
    ratios = _ordered_unique(key for info in rows for key in info["ratios"])
    block = rows[0]["block_s"]
    machine = data.get("machine_info", {})
    foreign = machine.get("smcs_foreign_cpu_share")
    busy = "" if foreign is None else f" Other processes used {foreign:.0%} of the machine's CPU time during the run."
    lines = [
        f"### Interleaved (competitors take turns in {block:g} s blocks; medians, then the median of each round's ratio)",
        "",
        f"CPU: {machine.get('smcs_cpu', '?')}.{busy}",
        "",
        "| N | d | bank | |I| | rounds | " + " | ".join(names) + " | " + " | ".join(r.replace("/", " ÷ ") for r in ratios) + " |",
        "|" + "---|" * (len(names) + len(ratios) + 5),
    ]
    for info in sorted(rows, key=lambda i: (i["n"], i["d"], i.get("kind", "topics"))):
        cells = [size_label(info["n"]), str(info["d"]), info.get("kind", "topics"), str(info["support"]), str(info["rounds"])]
        cells += [fmt_time(info["medians_s"][name]) if name in info["medians_s"] else "–" for name in names]
        cells += [fmt_ratio(math.nan if info["ratios"].get(r) is None else info["ratios"][r]) for r in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


BATCH_BASELINE = "smcs-route-x8"
"""The batch table's second ratio: each competitor's batch over eight separate smcs routes."""


def batch_table(path: Path) -> list[str]:
    """Markdown lines for ``test_route_batch.py``: per bank size, each competitor's median time per query,
    then its batch's median over the floor and over ``BATCH_BASELINE``."""
    rows: dict[tuple[int, int, str], dict[str, tuple[float, int]]] = defaultdict(dict)
    for bench in json.loads(path.read_text()).get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "batch_competitor" in info:
            key = (info["n"], info["d"], info.get("kind", "topics"))
            rows[key][info["batch_competitor"]] = (bench["stats"]["median"], info["batch"])
    if not rows:
        return []
    names = _ordered_unique(name for row in rows.values() for name in row)
    lines = [
        "### Batched routes (median per query; batch ×floor, ×eight smcs routes)",
        "",
        "| N | d | bank | " + " | ".join(names) + " |",
        "|" + "---|" * (len(names) + 3),
    ]
    for (n, d, kind), row in sorted(rows.items()):
        floor = row.get("floor", (math.nan, 1))[0]
        singles = row.get(BATCH_BASELINE, (math.nan, 1))[0]
        cells = [size_label(n), str(d), kind]
        for name in names:
            if name not in row:
                cells.append("–")
                continue
            median, batch = row[name]
            cells.append(f"{fmt_time(median / batch)} ({fmt_ratio(_ratio(median, floor))}, {fmt_ratio(_ratio(median, singles))})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def scoring_table(path: Path) -> list[str]:
    """Markdown lines for ``test_route_scoring.py``: per bank size, the fit's wall time, the interleaved
    median route under each scorer (and without a fit), and the median per-round ratios (vote over the
    unfitted route, each scorer over vote: what scoring adds to a route)."""
    return _interleaved_table(
        path, "scoring", "Route scoring (Router.route per scorer on a fitted bank", ("N", "d", "R", "|I|", "fit", "rounds"),
        lambda info: [size_label(info["n"]), str(info["d"]), str(info["models"]), str(info["support"]), fmt_time(info["fit_s"]), str(info["rounds"])],
    )


def _interleaved_table(
    path: Path, flag: str, title: str, columns: tuple[str, ...], leading: Callable[[dict], list[str]]
) -> list[str]:
    """Markdown lines for the interleaved benchmarks whose ``extra_info`` sets ``flag``: a row per bank size
    (``leading`` cells under ``columns``, then ``_interleaved_cells``)."""
    rows = [
        bench["extra_info"]
        for bench in json.loads(path.read_text()).get("benchmarks", [])
        if bench.get("extra_info", {}).get(flag)
    ]
    if not rows:
        return []
    names = _ordered_unique(name for info in rows for name in info["medians_s"])
    ratios = _ordered_unique(key for info in rows for key in info["ratios"])
    lines = [
        f"### {title}, interleaved; medians, then the median of each round's ratio and, in parentheses, of its difference)",
        "",
        "| " + " | ".join(columns) + " | " + " | ".join(names) + " | " + " | ".join(r.replace("/", " ÷ ") for r in ratios) + " |",
        "|" + "---|" * (len(names) + len(ratios) + len(columns)),
    ]
    for info in sorted(rows, key=lambda i: (i["n"], i["d"])):
        lines.append("| " + " | ".join(leading(info) + _interleaved_cells(info, names, ratios)) + " |")
    return lines


def _interleaved_cells(info: dict, names: list[str], ratios: list[str]) -> list[str]:
    """The cells of one interleaved benchmark (``interleave.py``): each competitor's median, then each ratio
    with, in parentheses, the time it adds."""
    cells = [fmt_time(info["medians_s"][name]) if name in info["medians_s"] else "–" for name in names]
    for r in ratios:
        cell = fmt_ratio(math.nan if info["ratios"].get(r) is None else info["ratios"][r])
        added = info.get("added_s", {}).get(r)
        cells.append(cell if added is None else f"{cell} ({'+' if added >= 0 else '−'}{fmt_time(abs(added))})")
    return cells


def cost_table(path: Path) -> list[str]:
    """Markdown lines for ``test_route_cost.py``: per bank size, the interleaved median route without costs,
    with them, with a willingness to pay and with a budget, and each over the route without costs."""
    return _interleaved_table(
        path, "cost", "Route cost (Router.route on a bank without and with recorded costs", ("N", "d", "|I|", "rounds"),
        lambda info: [size_label(info["n"]), str(info["d"]), str(info["support"]), str(info["rounds"])],
    )


def main(argv: list[str] | None = None) -> int:
    """Print the markdown report of the JSON file named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="output of pytest --benchmark-json")
    args = parser.parse_args(argv)
    results, machine_info = load(args.json)
    sections = [render(results, machine_info)] if results else []
    sections += ["\n".join(table) for table in (paired_table(args.json), scoring_table(args.json), cost_table(args.json), batch_table(args.json), service_table(args.json), answer_table(args.json)) if table]
    print("\n\n".join(sections) or "No benchmarks in this file (was it run with --benchmark-disable?).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
