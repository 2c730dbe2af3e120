"""Offline evaluation of routing quality on recorded outcomes (``smcs eval route``).

    from . import evaluate_routing, format_report
    report = evaluate_routing(Bank.open("bank"), Bank.open("queries"), Policy())
    print(format_report(report))

``smcs.eval.routing`` holds the metrics (numpy and ``smcs.kernels`` only), ``smcs.eval.report`` the
table and the plot (matplotlib, imported only by ``write_plot``), ``smcs.cli.eval`` the command.
"""

from .report import format_report, write_plot
from .routing import CostPoint, CoverageRow, Method, RoutingReport, SourceRow, SweepRow, evaluate_routing

__all__ = [
    "CostPoint",
    "CoverageRow",
    "Method",
    "RoutingReport",
    "SourceRow",
    "SweepRow",
    "evaluate_routing",
    "format_report",
    "write_plot",
]
