"""``smcs bank publish BANK s3://BUCKET/PREFIX``: upload what the bucket lacks of the bank's current version.

See ``smcs.bank.remote`` for the layout in the bucket and the order that keeps readers safe; servers started
with ``smcs serve --bank s3://BUCKET/PREFIX`` follow what is published (docs/storage.md, "Object storage").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smcs.bank import remote


def add_publish_parser(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``smcs bank publish``."""
    publish = actions.add_parser(
        "publish",
        help="upload the bank's current version to S3-compatible object storage (only what the bucket lacks)",
        description="Uploads what s3://BUCKET/PREFIX lacks of the bank's current version: the new bytes of its "
        "segments as immutable delta objects, a new capability base, the version's files, and CURRENT last, so a "
        "server following the URL (smcs serve --bank s3://...) never sees a version whose data are missing. Rerun "
        "after writes; a rerun with nothing new uploads nothing. One writer publishes to a URL. Credentials come "
        "the standard boto3 way (AWS_ACCESS_KEY_ID, ~/.aws, ...); needs boto3 (pip install 'smcs[s3]') and a "
        "schema 2 bank (smcs bank migrate converts a schema 1 one).",
    )
    publish.add_argument("path", type=Path, help="bank directory")
    publish.add_argument("url", help="where to publish it: s3://BUCKET/PREFIX")
    publish.add_argument(
        "--endpoint-url", help="the S3-compatible endpoint, e.g. http://minio:9000 (default: AWS_ENDPOINT_URL, else AWS)"
    )
    publish.set_defaults(run=_run_publish)


def _run_publish(args: argparse.Namespace) -> int:
    location = remote.parse_url(args.url)  # a bad URL is refused before anything else
    sent = remote.publish(args.path, args.url, client=remote.s3_client(args.endpoint_url))
    print(f"bank {args.path} version {sent.version} published to {location}: "
          f"{sent.objects} objects, {sent.bytes} bytes uploaded")
    return 0
