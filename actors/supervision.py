"""How the domain actors supervise their children."""

from __future__ import annotations

from cloudcore.errors import CloudcoreError, VersionConflict
from cloudcore.runtime import Directive, SupervisorStrategy

__all__ = ["DOMAIN_STRATEGY", "refusals_resume"]


def refusals_resume(error: Exception) -> Directive:
    """A refusal is the answer to a request, not a fault of the actor: an illegal transition, a
    bad parameter, a missing record, a backend that is down. The asker gets the error and the
    actor goes on. A version conflict means the actor's copy of its record is stale: restart it,
    and it reloads. Anything else is a bug: restart."""
    if isinstance(error, VersionConflict):
        return Directive.RESTART
    if isinstance(error, CloudcoreError | ValueError):
        return Directive.RESUME
    return Directive.RESTART


#: Refusals resume; three restarts within 10 s escalate.
DOMAIN_STRATEGY = SupervisorStrategy(decider=refusals_resume, max_restarts=3, within=10.0)
