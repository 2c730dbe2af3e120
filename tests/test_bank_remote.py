"""Banks in S3-compatible object storage (``smcs.bank.remote``), against moto's stand-alone S3 server.

The server runs in this process (``ThreadedMotoServer``) on 127.0.0.1, on a port the system picks, for the
module, and stops with it; each test gets a bucket of its own, dummy credentials and the endpoint through
the environment (as boto3 reads them; ``smcs serve`` subprocesses inherit them). What ``publish`` uploads
and ``sync`` downloads is counted by a recording client wrapped around boto3's. The ``slow`` test runs two
``smcs serve --bank s3://...`` processes, each with a cache of its own, as on two machines.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

pytest.importorskip("boto3", reason="the object-storage tests need boto3 (pip install -e '.[test,s3]')")
moto_server = pytest.importorskip("moto.server", reason="the object-storage tests need moto[server] (the test extra)")

from load_harness import SmcsServe  # noqa: E402
from service_harness import DIM, POLICY, expect_rpc_error, queries_for, wait_until  # noqa: E402
from smcs import Client  # noqa: E402
from smcs.bank import Bank, BankError, Question, remote  # noqa: E402
from smcs.bank.remote import RemoteError  # noqa: E402
from smcs.cli.main import main  # noqa: E402
from smcs.synthetic import create_clustered_bank  # noqa: E402

N_QUESTIONS, N_MODELS = 300, 5
_buckets = itertools.count()


class Recording:
    """An S3 client that passes every call on to boto3's and records the objects put and got (key → bytes)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.puts: dict[str, int] = {}
        self.gets: dict[str, int] = {}

    def put_object(self, **kwargs: Any) -> Any:
        body = kwargs["Body"]
        data = body if isinstance(body, bytes) else body.read()
        self.puts[kwargs["Key"]] = len(data)
        return self._client.put_object(**{**kwargs, "Body": data})

    def get_object(self, **kwargs: Any) -> Any:
        response = self._client.get_object(**kwargs)
        self.gets[kwargs["Key"]] = response["ContentLength"]
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class FailsAtCurrent(Recording):
    """A client whose upload of ``CURRENT`` fails, as a publish interrupted just before it would."""

    def put_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith("/CURRENT"):
            raise ConnectionError("interrupted before CURRENT")
        return super().put_object(**kwargs)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a free port), for the module; its URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """``s3://BUCKET/banks/main`` in a new bucket, with dummy credentials and the endpoint in the environment."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint, "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"smcs-test-{next(_buckets)}"
    remote.s3_client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/banks/main"


def client() -> Recording:
    return Recording(remote.s3_client())


def make(path: Path, seed: int = 0, schema_version: int = 2) -> Bank:
    return create_clustered_bank(path, N_QUESTIONS, DIM, N_MODELS, seed=seed, schema_version=schema_version)


def assert_same(a: Bank, b: Bank) -> None:
    """The two versions hold the same data (the cache's and the writer's)."""
    assert a.version == b.version
    assert np.array_equal(a.embeddings, b.embeddings)
    assert np.array_equal(a.capability, b.capability)
    assert a.questions == b.questions
    assert a.models == b.models


def grow(bank: Bank, tag: str = "a") -> Bank:
    """Two writes on ``bank``: outcomes of existing questions, then new questions (ids ``new-TAG-I``); the last version."""
    flipped = [(f"model-0{r}", f"q{r}", 1 - max(0, int(bank.capability[r, r]))) for r in range(N_MODELS)]
    bank = bank.record_outcomes(flipped)
    rng = np.random.default_rng(7)
    new = [Question(id=f"new-{tag}-{i}", text=f"new question {i}") for i in range(4)]
    outcomes = rng.integers(-1, 2, size=(N_MODELS, 4))
    return bank.append_questions(rng.standard_normal((4, DIM)), new, outcomes)


def deltas(keys: dict[str, int]) -> dict[str, tuple[int, int]]:
    """The segment deltas among ``keys``: segment file → (offset, bytes), one delta per file expected."""
    found: dict[str, tuple[int, int]] = {}
    for key, size in keys.items():
        parts = key.split("/")
        if "segments" in parts and len(parts) > parts.index("segments") + 2:
            file, name = parts[-2], parts[-1]
            assert file not in found, f"more than one delta of {file}: {sorted(keys)}"
            offset, length = name.split("-")
            assert int(length) == size
            found[file] = (int(offset), size)
    return found


# ------------------------------------------------------------------------------------------ publish, sync


def test_publish_then_sync_gives_the_same_bank_and_a_rerun_uploads_nothing(url: str, tmp_path: Path) -> None:
    bank = make(tmp_path / "bank")
    sent = remote.publish(tmp_path / "bank", url, client=(writer := client()))
    assert sent.version == "v000001" and sent.objects == len(writer.puts) and sent.bytes == sum(writer.puts.values())
    assert list(writer.puts)[-1].endswith("banks/main/CURRENT")  # last
    assert remote.publish(tmp_path / "bank", url, client=(again := client())).objects == 0 and again.puts == {}

    cache = remote.sync(url, tmp_path / "cache")
    synced = Bank.open(cache, verify=True)  # every hash of the manifest and the journal checks out
    assert_same(synced, bank)
    segments = tmp_path / "bank" / "segments"
    assert (cache / "segments" / "embeddings.f32").read_bytes() == (segments / "embeddings.f32").read_bytes()


def test_a_second_publish_uploads_and_a_second_sync_downloads_only_what_changed(url: str, tmp_path: Path) -> None:
    first = make(tmp_path / "bank")
    remote.publish(tmp_path / "bank", url)
    cache = remote.sync(url, tmp_path / "cache")
    reader = Bank.open(cache)
    reader.capability, reader.questions  # noqa: B018 - read, so that refresh follows incrementally
    grown = grow(first)

    remote.publish(tmp_path / "bank", url, client=(writer := client()))
    old, new = first.segments, grown.segments
    assert old is not None and new is not None
    expected = {
        "embeddings.f32": (old.embeddings, new.embeddings - old.embeddings),
        "questions.jsonl": (old.questions, new.questions - old.questions),
        "journal.jsonl": (old.journal, new.journal - old.journal),
        new.log: (old.log_bytes, new.log_bytes - old.log_bytes),
    }
    assert deltas(writer.puts) == expected
    version_files = {key for key in writer.puts if "/segments/" not in key}
    prefix = "banks/main"
    assert version_files == {f"{prefix}/v000003/manifest.json", f"{prefix}/v000003/models.json", f"{prefix}/CURRENT"}
    assert sum(writer.puts.values()) - sum(length for _, length in expected.values()) < 4096  # no base, no old bytes

    assert remote.sync(url, cache, client=(follower := client())) == cache
    assert deltas(follower.gets) == expected
    assert {key for key in follower.gets if "/segments/" not in key} == {f"{prefix}/CURRENT", f"{prefix}/v000003/manifest.json"}
    refreshed = reader.refresh()  # unchanged store code, over the cache
    assert_same(refreshed, grown)
    Bank.open(cache).verify()

    assert remote.sync(url, cache, client=(idle := client())) == cache
    assert list(idle.gets) == [f"{prefix}/CURRENT"]


def test_a_publish_interrupted_before_current_leaves_the_old_version_readable(url: str, tmp_path: Path) -> None:
    first = make(tmp_path / "bank")
    remote.publish(tmp_path / "bank", url)
    grown = grow(first)
    with pytest.raises(ConnectionError):
        remote.publish(tmp_path / "bank", url, client=FailsAtCurrent(remote.s3_client()))

    assert_same(Bank.open(remote.sync(url, tmp_path / "cache")), first)  # the deltas uploaded are not looked at

    remote.publish(tmp_path / "bank", url, client=(rerun := client()))
    assert list(rerun.puts) == ["banks/main/CURRENT"]  # everything else was there already
    assert_same(Bank.open(remote.sync(url, tmp_path / "cache")), grown)


def test_a_fold_publishes_a_new_base_and_sync_follows_it(url: str, tmp_path: Path) -> None:
    grown = grow(make(tmp_path / "bank"))
    remote.publish(tmp_path / "bank", url)
    cache = remote.sync(url, tmp_path / "cache")
    folded = grown.fold()
    assert folded.segments is not None and folded.segments.base != grown.segments.base
    remote.publish(tmp_path / "bank", url, client=(writer := client()))
    assert f"banks/main/segments/{folded.segments.base}" in writer.puts
    remote.sync(url, cache)
    assert_same(Bank.open(cache, verify=True), folded)
    Bank.open(cache).prune(1)  # trimmed by hand: the old base and log go
    assert not (cache / "segments" / grown.segments.base).exists()
    grown = grow(folded, "b")
    remote.publish(tmp_path / "bank", url)
    remote.sync(url, cache)
    assert_same(Bank.open(cache, verify=True), grown)


def test_sync_refuses_a_damaged_delta_naming_it(url: str, tmp_path: Path) -> None:
    make(tmp_path / "bank")
    remote.publish(tmp_path / "bank", url, client=(writer := client()))
    key = next(key for key in writer.puts if "/segments/questions.jsonl/" in key)
    location = remote.parse_url(url)
    s3 = remote.s3_client()
    data = bytearray(s3.get_object(Bucket=location.bucket, Key=key)["Body"].read())
    data[10] ^= 1  # same length, one bit off
    s3.put_object(Bucket=location.bucket, Key=key, Body=bytes(data))
    with pytest.raises(RemoteError, match="segments/questions.jsonl/ holds bytes 0..*but the journal records"):
        remote.sync(url, tmp_path / "cache")
    assert not (tmp_path / "cache" / "CURRENT").exists()  # nothing committed


# ------------------------------------------------------------------------------------------ refusals


def test_a_schema_1_bank_is_refused_naming_migrate(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make(tmp_path / "old", schema_version=1)
    with pytest.raises(BankError, match="schema 1.*smcs bank migrate"):
        remote.publish(tmp_path / "old", url)
    assert main(["bank", "publish", str(tmp_path / "old"), url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("smcs: error: ") and "smcs bank migrate" in err


@pytest.mark.parametrize("bad", ["s3://", "s3:///prefix", "s3://Bad_Bucket/x", "s3://bucket/a//b", "https://bucket/x"])
def test_a_bad_url_is_one_line_naming_it(bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bank", "publish", str(tmp_path), bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(bad) in err and "Traceback" not in err


def test_the_default_cache_is_one_per_bucket_and_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert remote.default_cache_dir("s3://bucket-1/a/b/") == tmp_path / "smcs" / "banks" / "bucket-1" / "a" / "b"
    assert remote.default_cache_dir("s3://bucket-1") != remote.default_cache_dir("s3://bucket-2")


def test_without_boto3_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    make(tmp_path / "bank")
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 now fails as if it were not installed
    with pytest.raises(RemoteError, match=r"pip install 'smcs\[s3\]'"):
        remote.publish(tmp_path / "bank", "s3://bucket/prefix")


def test_serve_of_a_url_without_a_bank_is_one_line(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "smcs.toml"
    config.write_text(f'[server]\nbank_cache_dir = "{tmp_path / "cache"}"\n')
    assert main(["serve", "--config", str(config), "--bank", url, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{url} holds no bank" in err


def test_the_cli_publishes(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bank = make(tmp_path / "bank")
    assert main(["bank", "publish", str(tmp_path / "bank"), url]) == 0
    assert f"version v000001 published to {url}" in capsys.readouterr().out
    assert_same(Bank.open(remote.sync(url, tmp_path / "cache")), bank)


def test_sync_refuses_a_url_without_a_bank_and_a_cache_of_another_bank(url: str, tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="holds no bank"):
        remote.sync(url, tmp_path / "cache")
    make(tmp_path / "one", seed=1)
    make(tmp_path / "two", seed=2)
    remote.publish(tmp_path / "one", url)
    remote.publish(tmp_path / "two", url + "-two")
    remote.sync(url, tmp_path / "cache")
    with pytest.raises(RemoteError, match=f"holds a copy of {url}, not of {url}-two"):
        remote.sync(url + "-two", tmp_path / "cache")
    (tmp_path / "cache" / remote.SOURCE).unlink()  # a cache that does not say which: its bank is compared
    with pytest.raises(RemoteError, match="holds another bank"):
        remote.sync(url + "-two", tmp_path / "cache")
    with pytest.raises(RemoteError, match="holds another bank"):
        remote.publish(tmp_path / "two", url)


# ------------------------------------------------------------------------------------------ servers


@pytest.mark.slow
def test_two_servers_follow_one_published_bank(url: str, tmp_path: Path) -> None:
    first = make(tmp_path / "bank")
    remote.publish(tmp_path / "bank", url)
    query = queries_for(tmp_path / "bank", 1)[0]
    servers = []
    try:
        for i in range(2):  # a cache each, as on two machines
            config = tmp_path / f"replica-{i}.toml"
            config.write_text(
                f'[server]\nhost = "127.0.0.1"\nport = 0\nbank_cache_dir = "{tmp_path / f"cache-{i}"}"\n'
                "bank_sync_interval_s = 0.2\n\n"
                f"[policy]\nk = {POLICY.k}\nn_base = {POLICY.n_base}\nn = {POLICY.n}\nthreads = 1\n\n"
                '[embedder]\nkind = "none"\n'
            )
            servers.append(SmcsServe(config, url, tmp_path / f"replica-{i}.log"))  # type: ignore[arg-type]
        for server in servers:
            server.wait_serving()
        clients = [Client(server.target, retries=0, timeout=10.0) for server in servers]
        for c in clients:
            assert c.bank_info().version == first.version == c.route(embedding=query, seed=1).bank_version
        expect_rpc_error(
            lambda: clients[0].record_outcomes([("model-00", "q0", 1)]), grpc.StatusCode.FAILED_PRECONDITION,
            "read-only replica", url,
        )

        grown = grow(first)
        remote.publish(tmp_path / "bank", url)
        for c in clients:
            wait_until(lambda c=c: c.route(embedding=query, seed=1).bank_version == grown.version, 30.0, 0.1,
                       what=f"a replica to route over {grown.version}")
            info = c.bank_info()
            assert (info.version, info.n_questions) == (grown.version, grown.n_questions)
        for c in clients:
            c.close()
    finally:
        for server in servers:
            server.stop()
