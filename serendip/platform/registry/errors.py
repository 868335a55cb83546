"""MLflow exceptions as one-line project errors: the caller's mistakes (an unknown model name,
version or alias, an invalid value) exit 2, an unreachable or failing tracking server exits 3."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

from serendip.errors import SerendipError, ServiceError

# MLflow error codes that mean the caller named something that is not there or is malformed
CLIENT_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS",
                "INVALID_STATE", "BAD_REQUEST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"}


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:240]


def tracking_uri() -> str:
    """The tracking URI in use, for messages (credentials in it masked)."""
    import re

    try:
        import mlflow

        uri = mlflow.get_tracking_uri()
    except Exception:  # pragma: no cover - mlflow itself broken
        uri = os.environ.get("MLFLOW_TRACKING_URI", "?")
    return re.sub(r"//[^/@]*@", "//***@", str(uri))


def translate(e: BaseException, what: str = "MLflow") -> SerendipError:
    """One-line project error for an exception raised by MLflow.

    Returns a :class:`SerendipError` (exit 2) for the caller's mistakes — an unknown model
    name, version or alias, an invalid value — and a :class:`ServiceError` (exit 3) when the
    tracking server cannot be reached or fails."""
    import requests
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    if isinstance(e, MlflowException):
        code = e.error_code
        msg = first_line(e)
        if code in CLIENT_CODES:
            return SerendipError(f"{what}: {msg}", field="registry",
                                 fix="check the model name, version and alias "
                                     "(serendip finetune registers, serendip promote gates)")
        if msg.startswith("API request to") or "Max retries exceeded" in msg:
            return ServiceError(f"the MLflow tracking server at {uri} did not answer ({what})",
                                field="MLFLOW_TRACKING_URI",
                                fix="start the server or point MLFLOW_TRACKING_URI at a running "
                                    "one; the run can be repeated (finished steps resume)")
        return ServiceError(f"MLflow failed ({what}): {msg}", field="MLFLOW_TRACKING_URI",
                            fix="check the tracking server's log")
    if isinstance(e, (requests.exceptions.RequestException, ConnectionError, TimeoutError)):
        return ServiceError(f"the MLflow tracking server at {uri} did not answer ({what}): "
                            f"{first_line(e)}", field="MLFLOW_TRACKING_URI",
                            fix="start the server or point MLFLOW_TRACKING_URI at a running one")
    raise TypeError(f"not an MLflow error: {e!r}")


def is_mlflow_error(e: BaseException) -> bool:
    import requests
    from mlflow.exceptions import MlflowException

    return isinstance(e, (MlflowException, requests.exceptions.RequestException,
                          ConnectionError, TimeoutError))


@contextmanager
def mlflow_errors(what: str = "MLflow") -> Iterator[None]:
    """Turn MLflow exceptions raised inside into one-line project errors (see
    :func:`translate`); project errors pass through unchanged."""
    try:
        yield
    except SerendipError:
        raise
    except Exception as e:
        if not is_mlflow_error(e):
            raise
        raise translate(e, what) from None


def translated(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with mlflow_errors(func.__name__.replace("_", " ")):
            return func(*args, **kwargs)
    return wrapper
