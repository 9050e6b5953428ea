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
import math
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

from core.errors import EnvironmentFault, InvalidSetting

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

# The longest waits before the second and third try of work that failed for environment
# reasons. Each wait is drawn uniformly below its cap (full jitter: the workers that failed
# together do not retry together), and the caps double.
RETRY_DELAYS_SECONDS = (4.0, 8.0)

# Multiplies those waits (a number >= 0; default 1). Read from each process's environment, so
# for Ray's workers it must be set before Ray starts; tests set it to shorten the waits.
RETRY_DELAY_SCALE_VARIABLE = "MUCODEC_RETRY_DELAY_SCALE"

# Object-store client errors raised while sending a request (no answer came): botocore
# retries these itself (pipeline.io.StorageOptions). Errors raised later, while reading an
# answer's body, are not among them: no layer below retried those. Matched by exact class
# name: aiobotocore's AioReadTimeoutError, a body that stopped arriving, subclasses one.
CLIENT_RETRIED_REQUEST_ERRORS = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ProxyConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
    }
)


class EnvironmentFailure(EnvironmentFault, RuntimeError):
    """The environment failed while working on an input, every try; the input may be fine."""


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
    if isinstance(error, EnvironmentFault | MemoryError | TimeoutError | ConnectionError):
        return True
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
        return True
    # botocore and aiohttp errors, by name: the object-store clients are optional imports.
    # (ClientPayloadError: an answer's body ended before its announced length.)
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & {"BotoCoreError", "ClientConnectionError", "ServerTimeoutError",
                "ClientPayloadError"}:  # fmt: skip
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
    """`work()`, tried again while it fails for environment reasons that no layer below retried.

    Before each further try it waits a random time below the next of `delays`, scaled by
    `retry_delay_scale()`. A full or read-only disk, and an object store's failure that its
    client already retried as often as it would (`retried_by_client`), are not tried again:
    those retries would multiply the client's.

    Raises:
        EnvironmentFailure: naming `what`, when the environment failed the last try.
    """
    for tries, cap in enumerate((*delays, None), start=1):
        try:
            return work()
        except Exception as error:
            if not is_environment_failure(error):
                raise
            if cap is None or not _worth_retrying(error):
                raise EnvironmentFailure(
                    f"{what}: {describe(error)} (tried {tries} times)"
                ) from error
            delay = random.uniform(0, cap) * retry_delay_scale()
            log.warning("%s: %s; trying again in %.1f s", what, describe(error), delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def retry_delay_scale() -> float:
    """The factor on `with_retries`'s waits: `$MUCODEC_RETRY_DELAY_SCALE`, 1 when unset.

    Raises:
        InvalidSetting: when the variable is not a finite number >= 0.
    """
    text = os.environ.get(RETRY_DELAY_SCALE_VARIABLE, "1")
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not (math.isfinite(scale) and scale >= 0):
        raise InvalidSetting(f"{RETRY_DELAY_SCALE_VARIABLE}={text!r}: expected a number >= 0")
    return scale


def retried_by_client(error: BaseException) -> bool:
    """True when `error`, or one it was raised from, is a failure botocore already retried.

    That is an answer after which botocore stopped retrying (its attempts or its retry quota
    spent), or a request that got no answer, which botocore retries the same way.
    """
    current: BaseException | None = error
    for _ in range(16):  # Exception chains are short; a cycle must not loop forever.
        if current is None:
            return False
        if type(current).__name__ in CLIENT_RETRIED_REQUEST_ERRORS:
            return True
        response = getattr(current, "response", None)
        metadata = response.get("ResponseMetadata", {}) if isinstance(response, dict) else {}
        if metadata.get("MaxAttemptsReached") or metadata.get("RetryQuotaReached"):
            return True
        current = current.__cause__ or current.__context__
    return False


def _worth_retrying(error: BaseException) -> bool:
    return not _chain_has_errno(error, NOT_WORTH_RETRYING) and not retried_by_client(error)


def _chain_has_errno(error: BaseException, numbers: frozenset[int]) -> bool:
    current: BaseException | None = error
    for _ in range(16):  # Exception chains are short; a cycle must not loop forever.
        if current is None:
            return False
        if isinstance(current, OSError) and current.errno in numbers:
            return True
        current = current.__cause__ or current.__context__
    return False
