"""The errors that stop a pretraining job besides a bad config; the launcher prints each as one `error:` line.

They live apart from the code that raises them so that the launcher can name them without importing torch.
"""


class CheckpointError(Exception):
    """A checkpoint that cannot be resumed from: missing, incomplete, corrupt or refused; the message names it."""


class NonFiniteLossError(RuntimeError):
    """`train.max_nonfinite_steps` steps in a row had a non-finite loss or gradients."""


class MonitorSetError(Exception):
    """A labelled monitor set that cannot be read; the message names the set and the file."""


JOB_ERRORS = (CheckpointError, NonFiniteLossError, MonitorSetError)
