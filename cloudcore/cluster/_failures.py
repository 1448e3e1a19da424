"""Errors across the wire: an ask's exception travels as a Failure and is rebuilt on arrival."""

from __future__ import annotations

import builtins

from cloudcore import errors
from cloudcore.cluster.wire import Failure
from cloudcore.errors import RemoteError

__all__ = ["failure_of", "rebuild"]


def failure_of(error: BaseException) -> Failure:
    cls = type(error)
    return Failure(
        error_type=cls.__qualname__,
        module=cls.__module__,
        text=str(error),
        retryable=bool(getattr(error, "retryable", False)),
    )


def rebuild(failure: Failure) -> Exception:
    """The same exception type if this node knows it (cloudcore errors, builtins), else
    RemoteError naming the original type."""
    cls: object = None
    if failure.module == "cloudcore.errors":
        cls = getattr(errors, failure.error_type, None)
    elif failure.module == "builtins":
        cls = getattr(builtins, failure.error_type, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls is not RemoteError:
        try:
            return cls(failure.text)
        except Exception:  # a constructor with other required arguments
            pass
    return RemoteError(
        f"{failure.module}.{failure.error_type}: {failure.text}",
        remote_type=f"{failure.module}.{failure.error_type}",
        retryable=failure.retryable,
    )
