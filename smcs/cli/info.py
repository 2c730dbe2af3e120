"""``smcs info``: what a server routes with (the ServerInfo RPC), and the proto3 JSON that ``smcs route
--json`` and ``smcs info --json`` print.

JSON output is the proto3 JSON mapping of the response message (``google.protobuf.json_format``), as
grpcurl and every protobuf library print it: field names as in the .proto (``bank_version``), 64-bit
integers (seeds) as strings (JavaScript's numbers cannot hold every 64-bit seed), enums by name
(``SCORER_VOTE``), and every field, defaults included.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message

from smcs.bank import Bank
from smcs.cli.target import SERVER_HELP, server_target
from smcs.client import DEFAULT_TARGET, Client, ServerInfo
from smcs.core import RouteDecision
from smcs.wire.decision import route_response


def proto_json(message: Message) -> str:
    """``message`` in the proto3 JSON mapping, every field printed, names as in the .proto."""
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=2
    )


def in_process_route_json(decision: RouteDecision, bank: Bank, *, debug: bool) -> str:
    """The JSON a server would answer ``decision`` with, support set included (``--json`` over ``--bank``)."""
    ids = np.array([q.id for q in bank.questions], dtype=object)
    return proto_json(route_response(decision, bank, ids, debug=debug, support=True))


def add_info_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``smcs info``: the server's version, default policy, scorer, bank version, Answer strategy and limits."""
    info = commands.add_parser(
        "info", help="what a server routes with: its version, default policy, scorer, bank version, Answer strategy and limits",
        description="Ask a server (the ServerInfo RPC) what a request without overrides gets: the policy it routes "
        "with (every field), the scorer and aggregator that policy resolves to on the live bank, the bank version, "
        "the default Answer strategy, whether it takes question text, and its limits.",
    )
    info.add_argument("--server", default=DEFAULT_TARGET, type=server_target, help=SERVER_HELP)
    info.add_argument("--token", help="bearer token (or set SMCS_TOKEN)")
    info.add_argument("--json", action="store_true", help="print the ServerInfoResponse as proto3 JSON")
    info.set_defaults(run=run_info)
    return info


def run_info(args: argparse.Namespace) -> int:
    with Client(args.server, token=args.token or os.environ.get("SMCS_TOKEN"), retries=0) as client:
        if args.json:
            print(proto_json(client.server_info_message()))
        else:
            print(describe(client.server_info()))
    return 0


def describe(info: ServerInfo) -> str:
    """``info`` as lines of text."""
    policy, limits = info.policy, info.limits
    optional = {
        "aggregator": f"{info.aggregator} (the bank's most accurate model)" if policy.aggregator is None else policy.aggregator,
        "min_references": f"⌈k/2⌉ = {-(-policy.k // 2)}" if policy.min_references is None else policy.min_references,
        "nprobe": "the index's default" if policy.nprobe is None else policy.nprobe,
        "threads": "by bank size" if policy.threads is None else policy.threads,
    }
    options = ", ".join(f"{k}={v}" for k, v in sorted(info.strategy_options.items()))
    lines = [
        f"server      smcs {info.version}",
        f"bank        {info.bank_version}",
        f"policy      k={policy.k} n_base={policy.n_base} gamma={policy.gamma:g} k_drop={policy.k_drop} n={policy.n} "
        f"lam={policy.lam:g} retrieval={policy.retrieval} scorer={policy.scorer} cover={str(policy.cover).lower()} "
        f"quantized={str(policy.quantized).lower()}",
        *(f"            {name}: {value}" for name, value in optional.items()),
        f"scorer      {info.scorer}" + (f" (policy scorer {policy.scorer})" if policy.scorer != info.scorer else ""),
        f"strategy    {info.strategy}" + (f" ({options})" if options else ""),
        f"text        {'accepted (the server embeds questions)' if info.accepts_text else 'embeddings only'}",
        f"limits      {limits.max_concurrent_rpcs} calls at once (then a wait of up to {limits.admission_wait_s:g} s), "
        f"{limits.max_question_chars} question characters, {limits.max_message_bytes} message bytes, "
        f"n ≤ {limits.max_subsets}, {limits.max_candidates} Score candidates",
    ]
    return "\n".join(lines)

