"""Credentials out of a config tree before it is printed, logged as params or stored as an artifact,
and out of any text that may hold a URL (log lines, error messages, MLflow tags).

Two rules: a value under a key that names a secret is replaced whole, and the userinfo of a URL
(`postgresql://user:PASS@host/db`, `s3://KEY:SECRET@bucket/...`) is replaced wherever it appears.
"""

from __future__ import annotations

import re
from typing import Any

# a key naming a secret: the word on its own or between underscores/dashes (`aws_secret_access_key`,
# `session_token`), not inside another word (`tokenizer`)
SECRET_KEY = re.compile(r"(^|[_-])(secret|token|passw\w*|credentials?|access_key|api_key|private_key|session)([_-]|$)",
                        re.IGNORECASE)
# fsspec/s3fs options that are not credentials; every other storage option value is redacted
PUBLIC_STORAGE_OPTIONS = {"anon", "endpoint_url", "region_name", "client_kwargs", "use_ssl", "requester_pays",
                          "default_block_size", "default_fill_cache", "config_kwargs", "skip_instance_cache"}
REDACTED = "***"
# the userinfo of a URL, up to the last '@' before whitespace or a quote: a password may hold '/' (AWS
# secrets do) or an unescaped '@'; a URL with a port and an '@' in its path loses more than the userinfo
URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@:'\"<>]*(?::[^\s'\"<>]*)?@")


def redact_urls(text: str) -> str:
    """`text` with the userinfo (user and password) of every URL in it replaced by '***'."""
    return URL_USERINFO.sub(rf"\1{REDACTED}@", text)


def redact(tree: Any, in_storage_options: bool = False) -> Any:
    """A copy of a config tree with credentials replaced by '***': secret-named keys' values, URL userinfo."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            k = str(key)
            secret_name = SECRET_KEY.search(k) is not None and not isinstance(value, bool)  # a flag is no secret
            if secret_name or (in_storage_options and k not in PUBLIC_STORAGE_OPTIONS):
                out[key] = REDACTED
            else:
                out[key] = redact(value, in_storage_options or k == "storage_options")
        return out
    if isinstance(tree, list):
        return [redact(v, in_storage_options) for v in tree]
    if isinstance(tree, str):
        return redact_urls(tree)
    return tree
