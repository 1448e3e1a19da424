"""How the domain actors supervise their children."""

from __future__ import annotations

from cloudcore.errors import CloudcoreError
from cloudcore.runtime import Directive, SupervisorStrategy

__all__ = ["DOMAIN_STRATEGY", "refusals_resume"]


def refusals_resume(error: Exception) -> Directive:
    """A refusal is the answer to a request, not a fault of the actor: an illegal transition, a
    bad parameter (InvalidRequest), a missing record, a version conflict, a backend that is down
    -- a CloudcoreError. The asker gets the error and the actor goes on (an actor whose own
    record changed under it reloads it itself). Anything else, a bare ValueError from
    ``int("x")`` included, is a bug: restart, so the actor starts again from the store."""
    if isinstance(error, CloudcoreError):
        return Directive.RESUME
    return Directive.RESTART


#: Refusals resume; three restarts within 10 s escalate.
DOMAIN_STRATEGY = SupervisorStrategy(decider=refusals_resume, max_restarts=3, within=10.0)
