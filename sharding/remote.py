"""fsspec options for remote stores: S3 connections get a bounded timeout and retry count unless the
options set their own, so an unreachable endpoint fails in seconds rather than after minutes of retries."""

from __future__ import annotations

S3_CONFIG = {"connect_timeout": 5, "retries": {"max_attempts": 3}}  # botocore's Config, one key at a time


def remote_options(url: str, options: dict | None) -> dict:
    """`options` for opening `url`, with `S3_CONFIG` under each botocore key they leave unset."""
    options = dict(options or {})
    if url.startswith(("s3://", "s3a://")):
        options["config_kwargs"] = {**S3_CONFIG, **options.get("config_kwargs", {})}
    return options
