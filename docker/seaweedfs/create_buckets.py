"""Create buckets on the S3-compatible store of docker-compose.yml, once it answers.

    python create_buckets.py BUCKET [BUCKET ...]

Hadoop's S3A connector reads and writes inside a bucket but never creates one, so the tables'
bucket must exist before the first job. The store is the one the platform's settings name
(``LAKEHOUSE_S3_ENDPOINT``, ``LAKEHOUSE_S3_REGION``, the keys in ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``). A bucket that exists already is left as it is, so the script runs at
every ``docker compose up``. Exits 1 when the store has not answered within ``--timeout``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger("create_buckets")
#: The answers to CreateBucket that mean the bucket is there already.
EXISTS = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


def client(env: dict[str, str]) -> Any:
    """An S3 client of the store ``env`` names, addressing buckets in the path."""
    return boto3.client(
        "s3",
        endpoint_url=env.get("LAKEHOUSE_S3_ENDPOINT") or None,
        region_name=env.get("LAKEHOUSE_S3_REGION") or "us-east-1",
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def ensure_bucket(s3: Any, name: str) -> bool:
    """Create bucket ``name`` unless it exists; return whether it was created now."""
    try:
        s3.create_bucket(Bucket=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in EXISTS:
            return False
        raise
    return True


def main(argv: list[str] | None = None) -> int:
    """Create every bucket named on the command line, retrying until the store answers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("buckets", nargs="+", metavar="BUCKET")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    s3 = client(dict(os.environ))
    deadline = time.monotonic() + args.timeout
    for name in args.buckets:
        while True:
            try:
                created = ensure_bucket(s3, name)
                break
            except (BotoCoreError, ClientError) as exc:
                # The gateway answers before its filer is ready: try again for a while.
                if time.monotonic() > deadline:
                    log.error("bucket %s: the store did not answer: %s", name, exc)
                    return 1
                time.sleep(1.0)
        log.info("bucket %s: %s", name, "created" if created else "exists")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
