"""AWS for every app: the one boto3 client factory, its retry policy, one error classification.

Clients are built here only, from settings (``AWS_REGION``, optional ``AWS_ENDPOINT_URL``), with
botocore's own retries configured once for every service: ``ELEPHANT_AWS_RETRY_MODE``
(``standard``, or ``adaptive``, which also rate-limits the client when AWS throttles) and
``ELEPHANT_AWS_MAX_ATTEMPTS`` attempts per call. Botocore backs off with jitter and keeps a retry
quota per client, so a long outage stops costing retries quickly. What outlasts the policy is
raised as ``AwsTransientError`` and goes back to the caller's scheduler (Celery's retry for the
fleet, the outbox's per-meeting schedule for the mirror): no code sleeps and retries by hand.

The classification (``aws_error``) is shared by the fleet (EC2, Route 53) and the mirror
(DynamoDB): transient (throttled, unavailable, unreachable), configuration (missing
credentials, permissions, unusable endpoint: retrying cannot help), capacity.
"""

import logging
from collections.abc import Callable
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from django.conf import settings

logger = logging.getLogger(__name__)

RETRY_MODES = ("standard", "adaptive")

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "PriorRequestNotComplete",
        "SlowDown",
        "EC2ThrottledException",
        "ProvisionedThroughputExceededException",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
        "RequestExpired",
    }
)
CAPACITY_CODES = frozenset({"InsufficientInstanceCapacity", "Unsupported", "InsufficientCapacity"})
CONFIG_EXCEPTIONS = (NoCredentialsError, PartialCredentialsError, NoRegionError)


class AwsError(Exception):
    """An AWS call failed. ``code`` is the AWS error code where there is one."""

    def __init__(self, message: str, *, code: str = "", operation: str = ""):
        super().__init__(message)
        self.code = code
        self.operation = operation


class AwsTransientError(AwsError):
    """Throttled, unavailable or unreachable after the retry policy: try again later."""


class AwsConfigError(AwsError):
    """Missing or wrong configuration or permissions: retrying cannot help."""


class AwsCapacityError(AwsError):
    """No capacity for this instance type (or the type is not offered there)."""


# --- the client factory -----------------------------------------------------------------------------
@cache
def _client(service: str, region: str, endpoint_url: str | None, mode: str, attempts: int, timeout: float | None):
    config = Config(
        retries={"mode": mode, "total_max_attempts": attempts},
        connect_timeout=timeout or 5,
        read_timeout=timeout or 20,
        max_pool_connections=32,
        # Presigned S3 links (recordings) in Signature Version 4, which every region accepts.
        signature_version="s3v4" if service == "s3" else None,
    )
    return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint_url, config=config)


def aws_client(service: str, *, timeout: float | None = None):
    """A cached, thread-safe boto3 client built from settings: the one place clients are made.

    ``timeout`` (seconds) bounds connecting and each read; the retry policy is the same for all.
    """
    mode = settings.ELEPHANT_AWS_RETRY_MODE
    if mode not in RETRY_MODES:
        raise AwsConfigError(
            f"ELEPHANT_AWS_RETRY_MODE {mode!r} is not one of {', '.join(RETRY_MODES)}",
            code="Configuration",
            operation=service,
        )
    attempts = max(1, settings.ELEPHANT_AWS_MAX_ATTEMPTS)
    try:
        return _client(service, settings.AWS_REGION, settings.AWS_ENDPOINT_URL, mode, attempts, timeout)
    except ValueError as exc:  # botocore's answer to an unusable AWS_ENDPOINT_URL or region
        raise AwsConfigError(f"AWS is not configured: {exc}", code="Configuration", operation=service) from exc


def aws_clients_reset() -> None:
    """Forget every client (after a change of settings, in tests)."""
    _client.cache_clear()


# --- the classification -------------------------------------------------------------------------------
def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def error_message(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Message", str(exc))


def is_transient(exc: BaseException) -> bool:
    """Throttling, a server-side fault or the network: what a later try may get through."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        # EC2 sends capacity errors as HTTP 500: they are an answer (try another type or zone), not a fault.
        if code in CAPACITY_CODES:
            return False
        return code in THROTTLING_CODES or code in TRANSIENT_CODES or status >= 500
    return isinstance(exc, BotoCoreError) and not isinstance(exc, CONFIG_EXCEPTIONS)


def aws_error(exc: BaseException, *, operation: str) -> AwsError:
    """The AwsError that ``exc`` (a botocore exception) stands for."""
    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, CONFIG_EXCEPTIONS):
        return AwsConfigError(f"AWS is not configured: {exc}", code=type(exc).__name__, operation=operation)
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if is_transient(exc):
            return AwsTransientError(f"{operation}: {code}: {error_message(exc)}", code=code, operation=operation)
        if code in CAPACITY_CODES:
            return AwsCapacityError(f"{code}: {error_message(exc)}", code=code, operation=operation)
        return AwsConfigError(f"{operation} refused: {code}: {error_message(exc)}", code=code, operation=operation)
    return AwsTransientError(f"{operation}: {exc}", code=type(exc).__name__, operation=operation)


def aws_call(method: Callable[..., dict], **params: Any) -> dict:
    """Call one boto3 operation; botocore has retried what its policy retries.

    Raises ``AwsTransientError`` for what outlasted the policy and ``AwsConfigError`` for
    missing credentials; any other ``ClientError`` is raised as it is, for the caller to read
    its code (``aws_error`` classifies it).
    """
    operation = getattr(method, "__name__", "call")
    try:
        return method(**params)
    except ClientError as exc:
        if is_transient(exc):
            error = aws_error(exc, operation=operation)
            logger.warning("AWS %s failed after the retry policy: %s", operation, error)
            raise error from exc
        raise
    except BotoCoreError as exc:
        raise aws_error(exc, operation=operation) from exc
