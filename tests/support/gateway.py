"""A real smcs server with its OpenAI-compatible HTTP gateway on, every model a loopback fault server.

``gateway_server(bank)`` starts ``smcs.service.start_server`` (``service_harness.running_server``) with
``[http] port = 0`` over the E2E text bank (``support.e2e``: models m-a, m-b, m-c, m-c the most
accurate), each model an OpenAI-compatible ``FaultServer`` answering ``"<model> says 156"``; tests change
a model's ``default`` reply (``replying``) or push scripted ones.
"""

from __future__ import annotations

import contextlib
import http.client
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from fault_server import FaultServer, Reply
from openai import OpenAI
from service_harness import ServerHandle, make_config, running_server

from smcs import Policy
from smcs.backends import OpenAIModelConfig
from smcs.config import AuthConfig, Config, HTTPConfig, MetricsConfig
from smcs.embed import EmbedderConfig

from .e2e import E2E_MODELS

MODELS = E2E_MODELS
POLICY = Policy(k=2, n=2, n_base=4, gamma=0.5)
API_KEY = "sk-test"
QUESTION = "What is 12 times 13?"


def answer_of(model: str) -> str:
    """What ``model``'s fault server answers by default."""
    return f"{model} says 156"


@dataclass
class GatewayServer:
    """A running server with its gateway and the fault servers of its models."""

    handle: ServerHandle
    servers: dict[str, FaultServer]

    @property
    def port(self) -> int:
        port = self.handle.running.http_port
        assert port is not None
        return port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def bank_version(self) -> str:
        live = self.handle.running.state.live
        assert live is not None
        return live.bank.version

    def client(self, api_key: str = API_KEY, **options: Any) -> OpenAI:
        """The ``openai`` SDK's client of the gateway (no retries: each test sees each status)."""
        return OpenAI(base_url=self.base_url, api_key=api_key, **{"max_retries": 0, "timeout": 60.0, **options})

    def post(self, body: bytes | str | dict, path: str = "/v1/chat/completions", *, method: str = "POST",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """A raw request (no SDK): status, headers (lower-cased) and the whole body."""
        data = msgspec.json.encode(body) if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=data if method == "POST" else None,
                               headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}", **(headers or {})})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def mark(self) -> dict[str, int]:
        """How many requests each model's server has received so far (for ``usage_since``)."""
        return {m: len(s.requests) for m, s in self.servers.items()}

    def usage_since(self, mark: dict[str, int]) -> tuple[int, int]:
        """The prompt and completion tokens the fault servers reported for the requests since ``mark``
        (every answered model call: prompt = words of the messages, completion = tokens of the reply)."""
        prompt = completion = 0
        for model, server in self.servers.items():
            for request in server.requests[mark[model]:]:
                if request.reply.kind != "ok" or not isinstance(request.json, dict):
                    continue
                prompt += sum(len(str(m.get("content", "")).split()) for m in request.json["messages"])
                completion += len(re.findall(r"\S+\s*", request.reply.text))
        return prompt, completion

    def bodies_since(self, mark: dict[str, int]) -> dict[str, list[dict]]:
        """The JSON bodies each model's server received since ``mark``."""
        return {m: [r.json for r in s.requests[mark[m]:] if isinstance(r.json, dict)] for m, s in self.servers.items()}


@contextlib.contextmanager
def replying(servers: dict[str, FaultServer], **replies: Reply) -> Iterator[None]:
    """Within the block, the named models' servers answer every request with the given reply."""
    before = {m: servers[m].default for m in replies}
    for model, reply in replies.items():
        servers[model].default = reply
    try:
        yield
    finally:
        for model, reply in before.items():
            servers[model].default = reply


def gateway_config(
    servers: dict[str, FaultServer], *, auth: AuthConfig | None = None, metrics: bool = False, **server: Any
) -> Config:
    """The server's config: the E2E policy, the bundled embedder, the fault servers as models, the gateway on
    port 0 (and ``/metrics`` on port 0 with ``metrics``); ``server``: ``[server]`` fields."""
    config = make_config(policy=POLICY, embedder=EmbedderConfig(), auth=auth, **server)
    models = {
        m: OpenAIModelConfig(base_urls=[s.base_url], retries=0, max_tokens=64, cooldown_s=0.0, timeout_s=30.0)
        for m, s in servers.items()
    }
    return msgspec.structs.replace(
        config, models=models, http=HTTPConfig(port=0), metrics=MetricsConfig(port=0 if metrics else None)
    )


@contextlib.contextmanager
def gateway_server(
    bank: Path, *, auth: AuthConfig | None = None, metrics: bool = False, **server: Any
) -> Iterator[GatewayServer]:
    """A server over ``bank`` with the gateway on, its models fault servers (stopped at the end)."""
    with contextlib.ExitStack() as stack:
        servers = {m: stack.enter_context(FaultServer(default=Reply.ok(answer_of(m)))) for m in MODELS}
        config = gateway_config(servers, auth=auth, metrics=metrics, **server)
        handle = stack.enter_context(running_server(bank, config))
        yield GatewayServer(handle, servers)


def sse_events(body: bytes) -> list[str]:
    """The lines of a server-sent-events body that are not blank (comments and ``data:`` lines)."""
    return [line for line in body.decode().split("\n") if line]
