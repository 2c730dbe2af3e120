"""A ``RoutingReport`` as terminal text, and as a PNG (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

import os

from .routing import RoutingReport


def _num(value: float | None, width: int = 8) -> str:
    return f"{'-':>{width}}" if value is None or value != value else f"{value:{width}.3f}"


def _params(params: dict[str, str | int | float]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def sweep_coverage_ks(report: RoutingReport) -> list[int]:
    """The K whose coverage the sweeps show: 3 (or R when smaller) and the policy's K."""
    return sorted({min(3, len(report.models)), report.k})


def format_report(report: RoutingReport) -> str:
    """The report as the fixed-width tables ``smcs eval route`` prints."""
    lines = []
    if report.mode == "held-out":
        lines.append(
            f"routing evaluation, held-out: bank {report.bank} {report.bank_version} ({report.n_bank} questions), "
            f"queries {report.queries} {report.queries_version} ({report.n_queries})"
        )
    else:
        lines.append(f"routing evaluation, leave-one-out over bank {report.bank} {report.bank_version} ({report.n_bank} questions)")
    lines.append(f"{len(report.models)} models; N_base={report.n_base} gamma={report.gamma:g} K={report.k}; {report.seconds:.1f} s")
    lines.append(report.unknown_rule)
    lines.append("")
    width = max(len(m.name) for m in report.methods)
    lines.append(f"{'method':<{width}}  {'top-1':>8}  {'unknown':>8}  {'pairwise':>8}  {'ECE':>8}  settings")
    for m in report.methods:
        mark = "  (default policy)" if m.name == report.default_method else ""
        lines.append(f"{m.name:<{width}}  {_num(m.accuracy)}  {_num(m.unknown)}  {_num(m.pairwise)}  {_num(m.ece)}  "
                     f"{_params(m.params) or m.description}{mark}")
    lines.append(f"default policy routes by {report.default_method}; scorers: {report.scorer_fit}")
    lines.append("")
    lines.append(f"{'K':>3}  {'smcs':>8}  {'default':>8}  {'source':>8}  {'static':>8}  {'oracle':>8}   top-K coverage "
                 "(default: the default policy's scorer; source: the K best on the query's source; static: the K most accurate on the bank)")
    for row in report.coverage:
        lines.append(f"{row.k:>3}  {_num(row.smcs)}  {_num(row.default)}  {_num(row.per_source)}  {_num(row.best_static)}  {_num(row.oracle)}")
    ks = sweep_coverage_ks(report)
    for parameter, fixed in (("n_base", f"gamma={report.gamma:g}"), ("gamma", f"N_base={report.n_base}")):
        rows = [r for r in report.sweeps if r.parameter == parameter]
        if not rows:
            continue
        lines.append("")
        header = "".join(f"  {f'cov@{k}':>8}" for k in ks)
        lines.append(f"{parameter:>7}  {'top-1':>8}{header}  {'pairwise':>8}  {'mean |I|':>9}   sweep of {parameter} ({fixed})")
        for r in rows:
            value = f"{int(r.value)}" if parameter == "n_base" else f"{r.value:g}"
            cells = "".join(f"  {_num(r.coverage[k - 1])}" for k in ks)
            lines.append(f"{value:>7}  {_num(r.accuracy)}{cells}  {_num(r.pairwise)}  {r.mean_support:9.1f}")
    if report.by_source:
        names = list(report.by_source[0].accuracy)
        source_width = max(6, *(len(r.source or "-") for r in report.by_source))
        lines.append("")
        lines.append(f"{'source':<{source_width}}  {'n':>6}  " + "  ".join(f"{n:>{max(5, len(n))}}" for n in names) + "   top-1 by source")
        for r in report.by_source:
            cells = "  ".join(_num(r.accuracy[n], max(5, len(n))) for n in names)
            lines.append(f"{r.source or '-':<{source_width}}  {r.n:>6}  {cells}")
    if report.costs is not None:
        lines.append("")
        name_width = max(len(p.name) for p in report.costs)
        lines.append(f"{'routing':<{name_width}}  {'top-1':>8}  {'mean cost':>12}  cost basis: {report.cost_basis}")
        for p in report.costs:
            mark = "bound" if p.bound else "" if p.dominated else "non-dominated"
            lines.append(f"{p.name:<{name_width}}  {_num(p.accuracy)}  {p.mean_cost:12.6g}  {mark}".rstrip())
    if report.aiq:
        lines.append("")
        aiq_width = max(len(name) for name in report.aiq)
        lines.append(f"{'AIQ (area under the accuracy-cost curve / cost range)':<{aiq_width}}")
        for name, value in sorted(report.aiq.items(), key=lambda item: -item[1]):
            lines.append(f"{name:<{aiq_width}}  {value:.4f}")
    if report.notes:
        lines.append("")
    for note in report.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def write_plot(report: RoutingReport, path: str | os.PathLike[str]) -> None:
    """A PNG at ``path``: the top-K coverage curves, the N_base and γ sweeps, and accuracy vs cost when the
    report has costs. Imports matplotlib (Agg backend) here, so nothing else needs it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = 1 + bool(report.sweeps) * 2 + (report.costs is not None) + bool(report.calibration)
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    ks = [r.k for r in report.coverage]
    ax.plot(ks, [r.smcs for r in report.coverage], "o-", label="smcs top-K")
    if report.default_method != "smcs":
        ax.plot(ks, [r.default for r in report.coverage], "^-", label=f"{report.default_method} top-K")
    ax.plot(ks, [r.per_source for r in report.coverage], "d--", label="per-source K")
    ax.plot(ks, [r.best_static for r in report.coverage], "s--", label="best static K")
    ax.plot(ks, [r.oracle for r in report.coverage], ":", color="k", label="oracle")
    ax.set(xlabel="K", ylabel="coverage", title="top-K coverage")
    ax.legend()
    for parameter in ("n_base", "gamma") if report.sweeps else ():
        ax = axes.pop(0)
        rows = [r for r in report.sweeps if r.parameter == parameter]
        values = [r.value for r in rows]
        ax.plot(values, [r.accuracy for r in rows], "o-", label="top-1")
        for k in sweep_coverage_ks(report):
            ax.plot(values, [r.coverage[k - 1] for r in rows], "s-", label=f"coverage@{k}")
        if parameter == "n_base":
            ax.set_xscale("log")
        ax.set(xlabel=parameter, ylabel="share of queries", title=f"sweep of {parameter}")
        ax.legend()
    if report.costs is not None:
        ax = axes.pop(0)
        for dominated, marker in ((True, "x"), (False, "o")):
            points = [p for p in report.costs if p.dominated == dominated]
            ax.scatter([p.mean_cost for p in points], [p.accuracy for p in points], marker=marker,
                       label="dominated" if dominated else "non-dominated")
        swept = sorted((p.mean_cost, p.accuracy) for p in report.costs if p.name.startswith("smcs W="))
        if swept:
            ax.plot([c for c, _ in swept], [a for _, a in swept], "-", color="C2", label="smcs willingness-to-pay sweep")
        ax.set(xlabel="mean cost per query", ylabel="top-1", title="accuracy vs cost")
        ax.legend()
    if report.calibration:
        ax = axes.pop(0)
        ax.plot([0, 1], [0, 1], ":", color="k", label="perfect")
        for curve in report.calibration:
            ax.plot([b.mean_p for b in curve.bins], [b.observed for b in curve.bins], "o-", label=f"{curve.method} (ECE {curve.ece:.3f})")
        ax.set(xlabel="predicted p", ylabel="observed share correct", title="reliability")
        ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(os.fspath(path), format="png")
    plt.close(figure)
