"""Whose fault a failure is: the input's, or the environment's.

An input defect (a corrupt or truncated file, a missing path in a manifest, lyrics that are
not text, a song too short for a segment) becomes a rejects row and the run goes on: running
again would fail the same way. An environment failure (no space, an I/O error, the network,
an object store's 5xx or throttling once its client's retries are spent, out of memory) is
never a reject: the unit or part it happened in stays unfinished, the job exits non-zero,
and rerunning the same command does the work. docs/reliability.md lists both.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# errno values that say nothing about the file being read, only about the machine, the disk
# or the network it is read from or written to.
ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC", "EDQUOT", "EIO", "EROFS", "ENOMEM", "EBUSY", "EAGAIN", "ETIMEDOUT",
        "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EHOSTUNREACH", "ENETUNREACH",
        "ENETDOWN", "EPIPE", "ESTALE", "EMFILE", "ENFILE", "EREMOTEIO", "EXDEV",
    )
    if hasattr(errno, name)
)  # fmt: skip

# Object-store refusals that mean "slow down", whatever HTTP status carries them.
THROTTLING = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "RequestTimeout",
        "ServiceUnavailable",
    }
)

# A full or read-only disk stays so for seconds at least: waiting and retrying only delays
# the unit's failure.
NOT_WORTH_RETRYING = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

# Waits before the second and third try of work that failed for environment reasons. Each
# object-store request has been retried by its client already (pipeline.io.StorageOptions).
RETRY_DELAYS_SECONDS = (2.0, 10.0)


class EnvironmentFailure(RuntimeError):
    """The environment failed while working on an input; the input itself may be fine."""


class InvalidSetting(ValueError):
    """A setting the user chose cannot work (a config value, an option's value).

    Raised by library code that validates what a person configured, so that a job can
    report it as a usage error (one line, exit status 2) while any other ValueError, a bug,
    keeps its traceback. The message names the setting and what would be accepted.
    """


class InvalidManifest(ValueError):
    """A catalog manifest the user gave cannot be read as one (syntax, encoding, columns).

    One unusable row is a reject; a manifest that cannot be parsed at all stops the run
    before any work, as a usage error. The message names the manifest and the problem.
    """


def is_environment_failure(error: BaseException) -> bool:
    """True when `error`, or an error it was raised from, is the environment's fault."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _environment_kind(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _environment_kind(error: BaseException) -> bool:
    if isinstance(error, EnvironmentFailure | MemoryError | TimeoutError | ConnectionError):
        return True
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
        return True
    # botocore and aiohttp errors, by name: the object-store clients are optional imports.
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & {"BotoCoreError", "ClientConnectionError", "ServerTimeoutError"}:
        return True
    response = getattr(error, "response", None)
    if "ClientError" not in names or not isinstance(response, dict):
        return False
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = response.get("Error", {}).get("Code")
    return (isinstance(status, int) and (status >= 500 or status == 429)) or code in THROTTLING


def describe(error: BaseException) -> str:
    """`error` as one line: its class name and message."""
    return f"{type(error).__name__}: {error}"


def with_retries(work: Callable[[], T], what: str,
                 delays: tuple[float, ...] = RETRY_DELAYS_SECONDS) -> T:  # fmt: skip
    """`work()`, tried again after each of `delays` while it fails for environment reasons.

    Raises:
        EnvironmentFailure: naming `what`, when the environment failed every try.
    """
    for tries, delay in enumerate((*delays, None), start=1):
        try:
            return work()
        except Exception as error:
            if not is_environment_failure(error):
                raise
            if delay is None or _chain_has_errno(error, NOT_WORTH_RETRYING):
                raise EnvironmentFailure(
                    f"{what}: {describe(error)} (tried {tries} times)"
                ) from error
            log.warning("%s: %s; trying again in %.0f s", what, describe(error), delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _chain_has_errno(error: BaseException, numbers: frozenset[int]) -> bool:
    current: BaseException | None = error
    for _ in range(16):  # Exception chains are short; a cycle must not loop forever.
        if current is None:
            return False
        if isinstance(current, OSError) and current.errno in numbers:
            return True
        current = current.__cause__ or current.__context__
    return False
