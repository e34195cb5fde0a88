"""The base of every typed config section, and the error every config problem raises."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors and a validated config never changes (copy with `model_copy(update=...)`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A config file, override or flag that does not validate; the message names every bad key.

    Library code raises it; the command-line entry points turn it into one `error:` line and exit code 2.
    """
