"""tgtadm failures translated into cloudcore errors.

tgtadm exits 22 for every refusal of tgtd and says which in words on stderr, so the translation
goes by message (the wording is stable across tgt 1.0.x); it exits with an errno (107 ENOTCONN,
111 ECONNREFUSED...) when it cannot reach tgtd at all.
"""

from __future__ import annotations

from cloudcore.errors import BackendUnavailable, CloudcoreError, DriverError

__all__ = ["TgtadmRefused", "translate"]

# What tgtadm says -> the stable code the driver branches on.
_CODES = (
    ("can't find the target", "no_target"),
    ("can't find the logical unit", "no_lun"),
    ("can't find the account", "no_account"),
    ("access control rule does not exist", "no_acl"),
    ("already exists", "exists"),
    ("is still active", "active"),
    ("busy", "active"),
)
_REFUSED = 22


class TgtadmRefused(DriverError):
    """tgtd refused a tgtadm request; ``code`` is one of ``no_target``, ``no_lun``,
    ``no_account``, ``no_acl``, ``exists``, ``active`` or ``tgtadm`` (anything else)."""


def translate(returncode: int, stderr: str, what: str) -> CloudcoreError:
    """The error for a tgtadm run that exited ``returncode`` with ``stderr``; ``what`` names
    the request (never with a secret in it)."""
    message = stderr.strip().removeprefix("tgtadm: ")
    if returncode != _REFUSED:
        return BackendUnavailable(f"tgtd cannot be reached ({what}): {message or returncode}")
    for text, code in _CODES:
        if text in message:
            return TgtadmRefused(f"tgtd refused {what}: {message}", code=code)
    return TgtadmRefused(f"tgtd refused {what}: {message}", code="tgtadm")
