"""Credentials out of a config tree before it is printed, logged as params or stored as an artifact."""

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


def redact(tree: Any, in_storage_options: bool = False) -> Any:
    """A copy of a config tree with credentials replaced by '***'."""
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
    return tree
