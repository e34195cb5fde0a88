"""Credentials out of a config tree before it is printed, logged as params or stored as an artifact."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEY = re.compile(r"secret|token|passw|credential|access_key|api_key|private_key|session", re.IGNORECASE)
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
            if SECRET_KEY.search(k) or (in_storage_options and k not in PUBLIC_STORAGE_OPTIONS):
                out[key] = REDACTED
            else:
                out[key] = redact(value, in_storage_options or k == "storage_options")
        return out
    if isinstance(tree, list):
        return [redact(v, in_storage_options) for v in tree]
    return tree
