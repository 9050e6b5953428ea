"""One root for the project's errors, and the few kinds below it that decide what happens.

    PipelineError
    |-- UsageError          what the user asked for cannot be done: a setting, an input or an
    |   |                   output they named. A job says so in one `error:` line, exit 2.
    |   |-- InvalidSetting, InvalidManifest, UnsupportedVersion, MissingInput, OutputInUse
    |-- CheckpointError     a file given as a checkpoint is not one, or not of this model
    |                       (exit 2; the message names the file and what is wrong).
    |-- RejectedInput       one input of a catalog cannot be used: it becomes a rejects row
    |                       and the run goes on.
    |-- EnvironmentFault    the machine, the network, a store or the cluster failed: the work
                            stays unfinished, the job exits 1, a rerun resumes.

Anything else raised is a bug, and keeps its traceback. Each class also derives from the
built-in error a caller would naturally catch (ValueError, FileNotFoundError, ...).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Every error this project raises on purpose."""


class UsageError(PipelineError, ValueError):
    """What the user asked for (a flag, a setting, an input or output they named) cannot be
    done. The message names the setting and what would be accepted."""


class InvalidSetting(UsageError):
    """A setting the user chose cannot work (a config value, an option's value)."""


class InvalidManifest(UsageError):
    """A catalog manifest the user gave cannot be read as one (syntax, encoding, columns).

    One unusable row is a reject; a manifest that cannot be parsed at all stops the run
    before any work.
    """


class UnsupportedVersion(UsageError):
    """A persisted artifact carries a schema version this code does not read."""


class MissingInput(UsageError, FileNotFoundError):
    """An input the user named does not exist, or holds nothing of what was asked for."""


class OutputInUse(UsageError):
    """The output already holds a run of different inputs or settings."""


class CheckpointError(PipelineError, ValueError):
    """A file given as a checkpoint is not one, or not of the model it should hold."""


class RejectedInput(PipelineError):
    """One input cannot be used (a corrupt file, a name that leads nowhere): a reject."""


class EnvironmentFault(PipelineError):
    """The environment failed while working on an input or an output; it may be fine."""
