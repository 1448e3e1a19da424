"""The cloudcore exception tree.

Every error cloudcore raises descends from :class:`CloudcoreError`. Where the meaning matches a
standard exception we inherit from it too, so callers can catch ``LookupError`` or
``TimeoutError`` without knowing cloudcore. ``retryable`` says whether the same call may succeed
if tried again later (a backend was down, a mailbox was full), not whether it is safe to repeat.

Only these errors mean something to a client: the gateway maps each to a status and a stable
code, and an actor's supervisor resumes the actor after one (the asker gets the refusal). Any
other exception, a bare ``ValueError`` from ``int("x")`` included, is a bug: a 500 with a request
id at the gateway, a restart in an actor. Code that means "the caller's input is bad" raises
:class:`InvalidRequest` (a ``ValueError`` too, for callers that catch that).

::

    CloudcoreError
    ├── ConfigError (ValueError)             bad configuration file or environment override
    ├── InvalidMessage (TypeError)           not a frozen, tagged msgspec.Struct
    ├── NotFound (LookupError)               no such actor, VM, host, ...
    │   └── NoNodeMatches                    no cluster node satisfies a spawn's requirements
    ├── Conflict                             the thing changed or exists already
    │   ├── ActorNameTaken                   a sibling already has that name
    │   ├── IllegalTransition                the lifecycle refuses the operation now
    │   ├── AlreadyExists                    a record with that id or unique name exists
    │   ├── VersionConflict                  compare-and-set lost: the record changed meanwhile
    │   ├── InsufficientCapacity             a host cannot take the claim
    │   ├── NoValidHost                      no host passes the scheduler's filters; says which
    │   │   └── HostWaking                   none now; a standby host woken for it is ready soon
    │   ├── QuotaExceeded                    a tenant's quota cannot take the request
    │   ├── AddressesExhausted               a network has no free address left
    │   └── PositionExpired                  an event position is older than the retained history
    ├── ActorError                           the actor runtime
    │   ├── AskTimeout (TimeoutError)        no reply within the deadline
    │   ├── ActorStopped                     the actor is stopped (or stopped before replying)
    │   ├── ActorInterrupted                 the actor was restarted while handling the message
    │   ├── MailboxFull            retryable the bounded mailbox refused the message
    │   ├── RestartIntensityExceeded         a child failed too often; escalated to its parent
    │   ├── NodeDown                         the actor's node is down or left the cluster
    │   └── RemoteError                      a remote actor raised an error this node cannot rebuild
    ├── UnsupportedOperation (NotImplementedError)  a driver lacks the capability
    ├── BackendUnavailable (ConnectionError)  retryable: database, broker, event bus, hypervisor
    │   ├── TransportUnavailable   retryable the cluster transport lost its broker connection
    │   └── DatacenterUnavailable  retryable the node that runs a datacenter is down or unknown
    ├── DriverError                          a hypervisor or storage backend failed the operation
    ├── InvalidRequest (ValueError)          the caller's input is bad; names the field
    │   ├── InvalidRecord                    a record or change is malformed; nothing stored
    │   └── ImageRejected                    an image is not what it claims, has a backing file,
    │                                        fails its checksum or qemu-img check; not stored
    ├── BusClosed                            the event bus is closed: no publish, no subscriber
    ├── SchemaMismatch                       the database schema is not the version this code knows
    ├── ApiError                             (cloudcore.app.gateway.errors) the gateway's own
    │                                        refusal, with its HTTP status and stable code
    └── ApiFailure                           (cloudcore.app.client) a call to the API failed, as
                                             the CLI and the console tell their user

The event wire's ``Corrupt`` (cloudcore.events._wire) is deliberately outside the tree: it never
leaves the bus, which logs the entry it names and skips it, so no caller can meet it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ActorError",
    "ActorInterrupted",
    "ActorNameTaken",
    "ActorStopped",
    "AddressesExhausted",
    "AlreadyExists",
    "AskTimeout",
    "BackendUnavailable",
    "BusClosed",
    "CloudcoreError",
    "ConfigError",
    "Conflict",
    "DatacenterUnavailable",
    "DriverError",
    "HostWaking",
    "IllegalTransition",
    "ImageRejected",
    "InsufficientCapacity",
    "InvalidMessage",
    "InvalidRecord",
    "InvalidRequest",
    "MailboxFull",
    "NoNodeMatches",
    "NoValidHost",
    "NodeDown",
    "NotFound",
    "PositionExpired",
    "QuotaExceeded",
    "RemoteError",
    "RestartIntensityExceeded",
    "SchemaMismatch",
    "TransportUnavailable",
    "UnsupportedOperation",
    "VersionConflict",
    "describe",
]


class CloudcoreError(Exception):
    """Root of every error cloudcore raises."""

    retryable: bool = False


class ConfigError(CloudcoreError, ValueError):
    """The configuration file or an environment override is invalid; the message names the key."""


class InvalidMessage(CloudcoreError, TypeError):
    """A value sent to an actor is not a frozen, tagged ``msgspec.Struct``."""


class NotFound(CloudcoreError, LookupError):
    """The named thing does not exist."""


class Conflict(CloudcoreError):
    """The request conflicts with the current state."""


class ActorNameTaken(Conflict):
    """An actor with that name already exists under the same parent."""


class IllegalTransition(Conflict):
    """The lifecycle of an entity does not allow the operation in its current state."""


class ActorError(CloudcoreError):
    """An error of the actor runtime."""


class AskTimeout(ActorError, TimeoutError):
    """An ``ask`` got no reply before its deadline. The message may still have been handled."""


class ActorStopped(ActorError):
    """The actor is stopped, or stopped before it handled the message."""


class ActorInterrupted(ActorError):
    """The actor was restarted (a sibling failed) while it was handling the message."""


class MailboxFull(ActorError):
    """The actor's bounded mailbox is full and its overflow policy refuses new messages."""

    retryable = True


class RestartIntensityExceeded(ActorError):
    """A child failed more often than its supervisor's restart intensity allows."""


class UnsupportedOperation(CloudcoreError, NotImplementedError):
    """The driver or backend does not have the capability this call needs."""


class BackendUnavailable(CloudcoreError, ConnectionError):
    """A backend (database, broker, event bus, hypervisor) cannot be reached right now."""

    retryable = True


class DatacenterUnavailable(BackendUnavailable):
    """No node runs the datacenter now (its owner died and its lease has not expired yet, or it
    was cut off): an operation on it is refused before anything is written; retry later."""


class AlreadyExists(Conflict):
    """A record with the same id (or the same unique name) is stored already."""


class VersionConflict(Conflict):
    """A compare-and-set update lost: the record's version is no longer the one expected.

    Read the record again, decide again, and retry with the new version.
    """


class InsufficientCapacity(Conflict):
    """A host has not enough free CPU or memory (or is not schedulable) for a capacity claim."""


class QuotaExceeded(Conflict):
    """A tenant's quota for a resource cannot take the requested amount; the message names it."""


class AddressesExhausted(Conflict):
    """A network has no address left to hand out (all held, reserved or in quarantine)."""


class PositionExpired(Conflict):
    """An event position is older than the history the event bus retains: events were dropped.

    The client must resynchronise from the store and then subscribe from the latest position.
    """


class InvalidRequest(CloudcoreError, ValueError):
    """The caller's input is bad (a parameter out of range, a missing field, a malformed cursor);
    the message names the field. Nothing was changed."""


class InvalidRecord(InvalidRequest):
    """A record or a change has a malformed value; the message names the field. Nothing stored."""


class ImageRejected(InvalidRequest):
    """An uploaded or converted disk image is refused: a wrong size or checksum, a format not
    accepted, a backing file, a failed ``qemu-img check``. Nothing of it is kept in the library."""


class BusClosed(CloudcoreError):
    """The event bus is closed: a publish is refused, and every subscription and consumer ends
    with this error (at once if it starts after the close)."""


class SchemaMismatch(CloudcoreError):
    """The database schema is older or newer than this cloudcore; the message says what to run."""


class DriverError(CloudcoreError):
    """A hypervisor or storage backend refused or failed an operation for a reason that has no
    closer meaning (not missing, not an illegal transition, not unreachable, not unsupported).

    ``code`` is the backend's own error code or name, kept for logs and operators.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class NodeDown(ActorError):
    """The node the actor lives on is down (silent past the cluster's node timeout) or left.

    An ``ask`` in flight to that node fails with it; a ``tell`` with persistence still waits in
    the node's queue and is handled when the node comes back.
    """


class RemoteError(ActorError):
    """A remote actor raised an exception whose type this node cannot rebuild.

    ``remote_type`` is the qualified name of the original exception type.
    """

    def __init__(self, message: str, *, remote_type: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.retryable = retryable


class NoNodeMatches(NotFound):
    """No cluster node that is up has capabilities satisfying a spawn's requirements."""


class TransportUnavailable(BackendUnavailable):
    """The cluster transport has no broker connection right now; the node is reconnecting.

    Raised at once by an ``ask`` made while disconnected, and by the asks that were in flight
    when the connection dropped (their replies cannot arrive). Retry after a back-off.
    """


class NoValidHost(Conflict):
    """No host passes the scheduler's filters for a placement request.

    ``explanation`` maps each filter's name to the number of hosts it rejected (each host is
    counted once, by the first filter that rejected it); the message says the same in words.
    """

    def __init__(self, message: str, *, explanation: Mapping[str, int] | None = None) -> None:
        super().__init__(message)
        self.explanation: dict[str, int] = dict(explanation or {})


class HostWaking(NoValidHost):
    """No ON host fits the request, but a STANDBY host that does is being woken for it: ask
    again after ``ready_in`` seconds (the host's wake-up delay, what is left of it)."""

    def __init__(
        self,
        message: str,
        *,
        host_id: str,
        ready_in: float,
        explanation: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(message, explanation=explanation)
        self.host_id = host_id
        self.ready_in = ready_in


def describe(error: BaseException) -> str:
    """An exception as ``Type: message`` (just ``Type`` when it has no message), for faults,
    logs and error bodies."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
