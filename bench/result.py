"""How every benchmark hands back its numbers: a last line `RESULT {json}`, and optionally a JSON file."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, json_path: str | Path | None = None) -> None:
    """Write `result` to `json_path` (when given), then print it as the `RESULT` line scripts parse."""
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    print("RESULT " + json.dumps(result), flush=True)
