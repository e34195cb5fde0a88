"""The base of every typed config section, and the error every config problem raises."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors, numbers are finite, and a validated config never changes (copy with `model_copy`).

    Infinity and NaN are refused everywhere: no setting means them, and one that slips through (`lr: .inf`)
    only shows up steps later as a non-finite loss.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ConfigError(ValueError):
    """A config file, override or flag that does not validate; the message names every bad key.

    Library code raises it; the command-line entry points turn it into one `error:` line and exit code 2.
    """
