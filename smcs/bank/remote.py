"""Banks in S3-compatible object storage: ``publish`` a local bank to a bucket, ``sync`` a local cache from it.

A bank at ``s3://BUCKET/PREFIX`` is the layout of a schema 2 bank directory (``smcs.bank.store``,
``smcs.bank.segments``) turned into immutable objects, since an object cannot be appended to::

    PREFIX/CURRENT                                  "v000012\\n", written last by every publish
    PREFIX/v000012/manifest.json                    the version's files, manifest.json last
    PREFIX/v000012/models.json ...
    PREFIX/segments/capability-000001.npy           a capability base, whole
    PREFIX/segments/embeddings.f32/<offset>-<len>   one delta per published byte range of an append-only
    PREFIX/segments/questions.jsonl/...             segment (offset zero-padded to 16 digits, so keys sort
    PREFIX/segments/journal.jsonl/...               in offset order); the deltas of a file are contiguous
    PREFIX/segments/outcomes-000001.log/...         from byte 0

``publish`` uploads what the bucket lacks in the order that keeps readers safe: segment deltas and bases,
then the version's files, then ``CURRENT``; a reader that follows ``CURRENT`` therefore never meets a
version whose data are missing, and a publish interrupted anywhere leaves the previous version readable
(rerunning it uploads only what is still missing). ``sync`` makes a local directory a bank equal to the
remote's current version in the same order: the bases it lacks, the deltas past each local segment's
committed length (written at their offsets, past every length a local reader looks at), the version's
directory (files unchanged since the cache's version are hard-linked, not downloaded), and the local
``CURRENT`` last, atomically. ``Bank.open`` and ``Bank.refresh`` then read the cache as any bank, so routing
scans local memory-mapped arrays.

One writer publishes to a URL (``publish`` refuses a remote whose current version is newer than the local
one, or of another bank); any number of readers sync from it. The endpoint and credentials are boto3's
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ... or its configuration files); boto3 is imported only when a
URL is used (``pip install 'smcs[s3]'``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from ..errors import SmcsError
from . import atomic, segments
from .errors import BankError
from .schema import Manifest, Segments
from .store import CURRENT, LOCK, MANIFEST, Bank, _link_or_copy, _read_current, _version_number

SCHEME = "s3://"
PART_BYTES = 64 << 20
"""The largest delta ``publish`` uploads: a longer new range is split into deltas of this size (bounded memory)."""
_CHUNK_BYTES = 1 << 22
"""Streaming granularity of the downloads of whole files."""

SOURCE = ".source"
"""The file of a cache that names the URL it is a copy of (``sync`` refuses to fill it from another)."""
_DELTA_RE = re.compile(r"(\d{16})-(\d+)")
_MANIFEST_DECODER = msgspec.json.Decoder(Manifest)
_EXTENT_DECODER = msgspec.json.Decoder(segments.Extent)


class RemoteError(SmcsError):
    """The object store refused or failed a request, or holds something other than a bank ``sync`` or
    ``publish`` can use; the message names the URL or object key."""


@dataclasses.dataclass(frozen=True)
class Location:
    """A parsed ``s3://bucket/prefix`` URL; ``prefix`` has no leading or trailing slash ("" for the bucket's root)."""

    bucket: str
    prefix: str

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` (joined by ``/``) under the prefix."""
        return "/".join((self.prefix, *parts) if self.prefix else parts)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"


@dataclasses.dataclass
class Transfer:
    """What one ``publish`` did: the ``version`` it published, the ``objects`` it uploaded and their ``bytes``."""

    version: str
    objects: int = 0
    bytes: int = 0


def is_url(text: str | os.PathLike[str]) -> bool:
    """Whether ``text`` names a bank in object storage (``s3://...``) rather than a local directory."""
    return isinstance(text, str) and text.startswith(SCHEME)


def parse_url(url: str) -> Location:
    """The bucket and prefix of ``url`` (``s3://bucket`` or ``s3://bucket/prefix``); ``BankError`` naming the
    URL when it is not of that form."""
    if not is_url(url):
        raise BankError(f"bank URL {url!r} must start with {SCHEME} (s3://bucket/prefix)")
    bucket, _, prefix = url[len(SCHEME):].partition("/")
    prefix = prefix.strip("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
        raise BankError(f"bank URL {url!r}: {bucket!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise BankError(f"bank URL {url!r}: the prefix {prefix!r} has an empty, '.' or '..' part")
    return Location(bucket, prefix)


def default_cache_dir(url: str) -> Path:
    """Where a server keeps its local copy of the bank at ``url`` unless told otherwise:
    ``$XDG_CACHE_HOME/smcs/banks/BUCKET/PREFIX`` (``~/.cache`` when ``XDG_CACHE_HOME`` is unset)."""
    location = parse_url(url)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "smcs" / "banks" / location.bucket / (location.prefix or "_root")


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client for ``endpoint_url`` (None: boto3's own choice, ``AWS_ENDPOINT_URL`` or AWS); its
    credentials and region come the standard boto3 way. ``RemoteError`` when boto3 is not installed."""
    try:
        import boto3
    except ModuleNotFoundError:
        raise RemoteError("s3:// banks need boto3, which is not installed: pip install 'smcs[s3]'") from None
    with _s3_errors(f"connecting to {endpoint_url or 'the default S3 endpoint'}"):
        return boto3.client("s3", endpoint_url=endpoint_url or None)


# ------------------------------------------------------------------------------------------ publish


def publish(bank_dir: str | os.PathLike[str], url: str, *, client: Any = None) -> Transfer:
    """Upload what ``url`` lacks of the current version of the schema 2 bank at ``bank_dir``; return what was
    uploaded. Order: segment deltas and the capability base, the version's files (its manifest last), then
    ``CURRENT``. Idempotent: a rerun with no local write since uploads nothing. ``BankError`` for a schema 1
    bank (``smcs bank migrate`` converts it); ``RemoteError`` when the remote holds another bank or a newer
    version than the local one (one writer publishes to a URL)."""
    location = parse_url(url)
    bank = Bank.open(bank_dir)
    seg = bank.segments
    if seg is None:
        raise BankError(
            f"bank {bank.path} is in schema 1, which cannot be published: convert it with `smcs bank migrate {bank.path}` first"
        )
    s3 = client if client is not None else s3_client()
    remote = _remote_version(s3, location)
    remote_ends: dict[str, int] = {}
    if remote is not None:
        name, manifest = remote
        _require_same_bank(manifest.segments, seg, f"{location} holds another bank than {bank.path}; publish to a new prefix")
        if _version_number(name) > _version_number(bank.version):
            raise RemoteError(f"{location} is at version {name}, newer than {bank.path}'s {bank.version}: another writer publishes there")
        if name == bank.version and manifest != bank.manifest:
            raise RemoteError(f"{location.key(name, MANIFEST)} differs from {bank.path / name / MANIFEST}: another writer publishes there")
        if manifest.segments is not None:
            remote_ends = _ends(manifest.segments)
    sent = Transfer(bank.version)
    directory = bank.path / segments.DIRECTORY
    for file, end in _ends(seg).items():
        start = _delta_end(s3, location, file, remote_ends.get(file, 0))
        for offset in range(start, end, PART_BYTES):
            data = segments.read_range(directory / file, offset, min(end, offset + PART_BYTES))
            _put(s3, location, _delta_key(file, offset, len(data)), data, sent)
    if not _exists(s3, location, segments.DIRECTORY, seg.base):
        _put(s3, location, f"{segments.DIRECTORY}/{seg.base}", directory / seg.base, sent)
    there = _listed(s3, location, bank.version + "/")
    vdir = bank.path / bank.version
    for file in [*sorted(bank.manifest.files), MANIFEST]:
        if file not in there:
            _put(s3, location, f"{bank.version}/{file}", vdir / file, sent)
    if remote is None or remote[0] != bank.version:
        _put(s3, location, CURRENT, f"{bank.version}\n".encode("ascii"), sent)
    return sent


def _ends(seg: Segments) -> dict[str, int]:
    """The committed length of every append-only segment file of a version, the journal's included."""
    return segments.committed(seg) | {segments.JOURNAL: seg.journal}


def _require_same_bank(there: Segments | None, here: Segments | None, message: str) -> None:
    """``RemoteError(message)`` unless both versions hold segments of one lineage."""
    if there is None or here is None or there.lineage != here.lineage:
        raise RemoteError(message)


def _delta_key(file: str, offset: int, length: int) -> str:
    """The key, under the prefix, of the delta holding bytes ``offset`` to ``offset + length`` of segment ``file``."""
    return f"{segments.DIRECTORY}/{file}/{offset:016d}-{length}"


# --------------------------------------------------------------------------------------------- sync


def sync(url: str, cache_dir: str | os.PathLike[str], *, client: Any = None) -> Path:
    """Make ``cache_dir`` (created if missing) a local bank whose current version is ``url``'s; return its path.

    Downloads only what the cache lacks: nothing but ``CURRENT`` when the cache is current; else the new
    version's manifest, the capability base if new, the segment deltas past the cache's committed lengths
    (each checked to continue the file where the one before ended) and the version's other files, except
    those the cache's version holds unchanged (hard-linked). The local ``CURRENT`` is replaced last, so a
    reader of the cache (``Bank.refresh``, a server following it) sees the old version or the new one,
    complete. Holds the cache's writer lock, so concurrent syncs into one cache take turns. ``RemoteError``
    when the URL holds no bank, or the cache is a copy of another URL (its file ``.source`` names it) or
    another bank."""
    location = parse_url(url)
    root = Path(cache_dir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    s3 = client if client is not None else s3_client()
    with atomic.exclusive_lock(root / LOCK):
        claimed = _claim(root, location)
        name = _remote_current(s3, location)
        if name is None:
            raise RemoteError(f"{location} holds no bank ({location.key(CURRENT)} is missing): publish one there first")
        if (root / CURRENT).exists() and _read_current(root) == name and not claimed:
            return root
        local = _local_version(root)
        raw = _get(s3, location, f"{name}/{MANIFEST}")
        manifest = _decode_manifest(raw, location, name)
        seg = manifest.segments
        if seg is None:
            raise RemoteError(f"{location.key(name, MANIFEST)} is a schema 1 manifest; a published bank is in schema 2")
        held: Mapping[str, int] = {}
        if local is not None:
            _require_same_bank(
                local[1].segments, seg, f"cache {root} holds another bank than {location}; remove it or choose another cache directory"
            )
            assert local[1].segments is not None
            held = _ends(local[1].segments)
        atomic.remove_scratch(root)
        directory = root / segments.DIRECTORY
        directory.mkdir(exist_ok=True)
        atomic.remove_scratch(directory)
        _fetch_base(s3, location, directory, seg)
        for file, end in _ends(seg).items():
            _fetch_deltas(s3, location, directory / file, held.get(file, 0), end)
        _check_new_extents(directory, held.get(segments.JOURNAL, 0), seg, location)
        atomic.fsync_dir(directory)
        if not (root / name).is_dir():
            _fetch_version(s3, location, root, name, manifest, raw, local)
        atomic.replace_synced(root / CURRENT, f"{name}\n".encode("ascii"))
    return root


def _claim(root: Path, location: Location) -> bool:
    """Record in the cache ``root`` that it copies ``location``; whether it did so now (False: it said so
    already). ``RemoteError`` when it copies another URL."""
    path = root / SOURCE
    url = f"{location}\n"
    try:
        held = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        atomic.replace_synced(path, url.encode())
        return True
    if held != url:
        raise RemoteError(
            f"cache {root} holds a copy of {held.strip()}, not of {location}: remove it or choose another cache directory"
        )
    return False


def _local_version(root: Path) -> tuple[str, Manifest] | None:
    """The cache's current version and its manifest; None when it holds no bank yet."""
    if not (root / CURRENT).exists():
        return None
    bank = Bank.open(root)
    return bank.version, bank.manifest


def _fetch_base(s3: Any, location: Location, directory: Path, seg: Segments) -> None:
    """Download the capability base of ``seg`` into ``directory`` unless it is there; its SHA-256 is checked
    before it is renamed into place."""
    target = directory / seg.base
    if target.exists():
        return
    scratch = directory / f"{atomic.TEMP_PREFIX}{seg.base}"
    _download(s3, location, f"{segments.DIRECTORY}/{seg.base}", scratch, seg.base_sha256)
    os.rename(scratch, target)


def _fetch_deltas(s3: Any, location: Location, path: Path, start: int, end: int) -> None:
    """Write into the segment file ``path`` (created empty if missing) the deltas holding its bytes ``start``
    (the cache's committed length, where a delta begins) to ``end``, each at its offset (flushed); nothing
    below ``start`` is touched."""
    if not path.exists():
        atomic.write_synced(path, lambda out: None)
    if end <= start:
        return
    file = path.name
    covered = start
    for offset, length in _deltas(s3, location, file, start):
        if covered >= end:
            break
        data = _get(s3, location, _delta_key(file, offset, length))
        if len(data) != length:
            raise RemoteError(f"{location.key(_delta_key(file, offset, length))} holds {len(data)} bytes, not {length}")
        segments._write_at(path, data, offset)
        covered = offset + length
    if covered < end:
        raise RemoteError(f"{location.key(segments.DIRECTORY, file)}/ holds {covered} bytes but the version commits {end}")


def _check_new_extents(directory: Path, start: int, seg: Segments, location: Location) -> None:
    """Check the SHA-256 of every extent the journal lists past its byte ``start`` (what this sync brought)
    against the bytes downloaded; ``RemoteError`` naming the segment's deltas on the first that differs."""
    journal = directory / segments.JOURNAL
    ends = segments.committed(seg)
    for line in segments.read_range(journal, start, seg.journal).splitlines():
        try:
            extent = _EXTENT_DECODER.decode(line)
        except msgspec.DecodeError as e:
            raise RemoteError(f"{location.key(segments.DIRECTORY, segments.JOURNAL)}/ holds a line that is not an extent: {e}") from None
        end = extent.offset + extent.length
        if extent.file not in ends or end > ends[extent.file]:
            continue  # the log of an earlier base
        actual = segments._sha256_range(directory / extent.file, extent.offset, end, lambda _: None)
        if actual != extent.sha256:
            raise RemoteError(
                f"{location.key(segments.DIRECTORY, extent.file)}/ holds bytes {extent.offset}..{end} with SHA-256 {actual} "
                f"but the journal records {extent.sha256}"
            )


def _fetch_version(s3: Any, location: Location, root: Path, name: str, manifest: Manifest, raw: bytes,
                   local: tuple[str, Manifest] | None) -> None:
    """Build version directory ``name`` of the cache in scratch and rename it into place: every file of the
    manifest hard-linked from the cache's ``local`` version when it holds it with the same SHA-256, else
    downloaded and checked against its SHA-256; then the manifest ``raw`` itself."""
    scratch = atomic.make_temp_dir(root)
    try:
        for file, digest in manifest.files.items():
            if local is not None and local[1].files.get(file) == digest:
                _link_or_copy(root / local[0] / file, scratch / file)
                continue
            _download(s3, location, f"{name}/{file}", scratch / file, digest)
        atomic.write_synced(scratch / MANIFEST, lambda out: out.write(raw))
        atomic.publish_dir(scratch, root / name)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------ objects


def _remote_current(s3: Any, location: Location) -> str | None:
    """The version ``CURRENT`` names at ``location``; None when there is no ``CURRENT``."""
    raw = _get_if_exists(s3, location, CURRENT)
    if raw is None:
        return None
    name = raw.decode("ascii", errors="replace").removesuffix("\n")
    if _version_number(name) is None:
        raise RemoteError(f"{location.key(CURRENT)} holds {raw[:40]!r}, not a version name such as 'v000001'")
    return name


def _remote_version(s3: Any, location: Location) -> tuple[str, Manifest] | None:
    """The current version at ``location`` and its manifest; None when nothing was published there."""
    name = _remote_current(s3, location)
    if name is None:
        return None
    return name, _decode_manifest(_get(s3, location, f"{name}/{MANIFEST}"), location, name)


def _decode_manifest(raw: bytes, location: Location, name: str) -> Manifest:
    """The manifest ``raw`` of remote version ``name``; ``RemoteError`` naming its key when it does not decode."""
    try:
        return _MANIFEST_DECODER.decode(raw)
    except msgspec.DecodeError as e:
        raise RemoteError(f"{location.key(name, MANIFEST)} is not a valid manifest: {e}") from None


def _deltas(s3: Any, location: Location, file: str, start: int) -> Iterator[tuple[int, int]]:
    """The (offset, length) of the deltas of segment ``file`` from the one at byte ``start`` on, in offset
    order; ``RemoteError`` naming the key where one does not begin where the one before ended."""
    folder = f"{segments.DIRECTORY}/{file}/"
    expected = start
    for key in _keys(s3, location, folder, start_after=f"{start:016d}"):
        match = _DELTA_RE.fullmatch(key)
        if match is None:
            raise RemoteError(f"{location.key(folder + key)} is not a segment delta (OFFSET-LENGTH)")
        offset, length = int(match.group(1)), int(match.group(2))
        if offset != expected:
            raise RemoteError(f"{location.key(folder + key)} begins at byte {offset}, but the deltas before it end at {expected}")
        yield offset, length
        expected = offset + length


def _delta_end(s3: Any, location: Location, file: str, start: int) -> int:
    """Where the deltas of segment ``file`` end, counting from its committed length ``start`` (a publish
    interrupted before ``CURRENT`` may have uploaded more)."""
    end = start
    for offset, length in _deltas(s3, location, file, start):
        end = offset + length
    return end


def _keys(s3: Any, location: Location, folder: str, start_after: str = "") -> Iterator[str]:
    """The names (keys less ``prefix/folder``) of the objects under ``folder``, sorted, after ``start_after``."""
    base = location.key(folder)
    kwargs = {"Bucket": location.bucket, "Prefix": base}
    if start_after:
        kwargs["StartAfter"] = base + start_after
    paginator = s3.get_paginator("list_objects_v2")
    with _s3_errors(f"listing {SCHEME}{location.bucket}/{base}"):
        for page in paginator.paginate(**kwargs):
            for item in page.get("Contents", ()):
                yield item["Key"][len(base):]


def _listed(s3: Any, location: Location, folder: str) -> set[str]:
    """The names of the objects under ``folder``."""
    return set(_keys(s3, location, folder))


def _exists(s3: Any, location: Location, *parts: str) -> bool:
    """Whether the object ``parts`` exists."""
    key = location.key(*parts)
    with _s3_errors(f"looking up {SCHEME}{location.bucket}/{key}"):
        from botocore.exceptions import ClientError

        try:
            s3.head_object(Bucket=location.bucket, Key=key)
        except ClientError as e:
            if _not_found(e):
                return False
            raise
    return True


def _get(s3: Any, location: Location, name: str) -> bytes:
    """The bytes of object ``name`` (a key under the prefix); ``RemoteError`` naming it when it is missing."""
    data = _get_if_exists(s3, location, name)
    if data is None:
        raise RemoteError(f"{SCHEME}{location.bucket}/{location.key(name)} is missing")
    return data


def _get_if_exists(s3: Any, location: Location, name: str) -> bytes | None:
    """The bytes of object ``name`` (a key under the prefix); None when it is missing."""
    key = location.key(name)
    with _s3_errors(f"reading {SCHEME}{location.bucket}/{key}"):
        from botocore.exceptions import ClientError

        try:
            response = s3.get_object(Bucket=location.bucket, Key=key)
        except ClientError as e:
            if _not_found(e):
                return None
            raise
        return response["Body"].read()


def _not_found(error: Any) -> bool:
    """Whether boto3's ``ClientError`` says the object does not exist (HEAD answers a bare 404, GET NoSuchKey)."""
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def _download(s3: Any, location: Location, name: str, target: Path, sha256: str) -> None:
    """Stream object ``name`` into the new file ``target`` (fsynced); ``RemoteError`` naming the key, and no
    ``target``, when its SHA-256 is not ``sha256``."""
    key = location.key(name)

    def fill(out: atomic.HashingWriter) -> None:
        for chunk in body.iter_chunks(_CHUNK_BYTES):
            out.write(chunk)

    with _s3_errors(f"reading {SCHEME}{location.bucket}/{key}"):
        body = s3.get_object(Bucket=location.bucket, Key=key)["Body"]
        actual = atomic.write_synced(target, fill)
    if actual != sha256:
        target.unlink()
        raise RemoteError(f"{SCHEME}{location.bucket}/{key} has SHA-256 {actual} but the manifest records {sha256}")


def _put(s3: Any, location: Location, name: str, data: bytes | Path, sent: Transfer) -> None:
    """Upload ``data`` (bytes, or a file streamed) as object ``name`` (a key under the prefix); count it in ``sent``."""
    key = location.key(name)
    with _s3_errors(f"writing {SCHEME}{location.bucket}/{key}"), contextlib.ExitStack() as files:
        body = files.enter_context(open(data, "rb")) if isinstance(data, Path) else data
        s3.put_object(Bucket=location.bucket, Key=key, Body=body)
    sent.objects += 1
    sent.bytes += data.stat().st_size if isinstance(data, Path) else len(data)


@contextlib.contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """Turn boto3's errors (refusals, unreachable endpoint, missing credentials) into a ``RemoteError`` that
    says ``what`` was being done."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as e:
        error = e.response.get("Error", {})
        raise RemoteError(f"{what}: {error.get('Code', '?')}: {error.get('Message', e)}") from None
    except BotoCoreError as e:
        raise RemoteError(f"{what}: {e}") from None
