"""The template state machine, as data (the VM's is actors/lifecycle.py).

A template is created NEW (a record without an image). An upload takes it to UPLOADING and stays
there while bytes arrive, over as many requests as the uploader needs (resumed by offset); the
last byte, a matching checksum and an inspection that passes make it AVAILABLE, anything else
ERROR (from which a new upload may start). A conversion runs from AVAILABLE through CONVERTING
back to AVAILABLE whatever its outcome: the image it started from is untouched. One operation at
a time: a template CONVERTING refuses an upload, a second conversion and a delete.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cloudcore.errors import IllegalTransition
from cloudcore.store.records import TemplateState

__all__ = ["TRANSITIONS", "TemplateOperation", "TemplateTransition", "allowed", "transition"]

S = TemplateState


class TemplateOperation(enum.StrEnum):
    UPLOAD = "upload"
    CONVERT = "convert"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class TemplateTransition:
    operation: TemplateOperation
    sources: frozenset[TemplateState]
    transient: TemplateState
    success: TemplateState
    failure: TemplateState


TRANSITIONS: dict[TemplateOperation, TemplateTransition] = {
    t.operation: t
    for t in (
        # UPLOADING is a source too: the next chunk of an upload resumed by offset.
        TemplateTransition(
            TemplateOperation.UPLOAD,
            frozenset({S.NEW, S.UPLOADING, S.ERROR}),
            S.UPLOADING,
            S.AVAILABLE,
            S.ERROR,
        ),
        TemplateTransition(
            TemplateOperation.CONVERT,
            frozenset({S.AVAILABLE}),
            S.CONVERTING,
            S.AVAILABLE,
            S.AVAILABLE,
        ),
        TemplateTransition(
            TemplateOperation.DELETE,
            frozenset({S.NEW, S.UPLOADING, S.AVAILABLE, S.ERROR}),
            S.DELETING,
            S.DELETING,  # the record is gone on success
            S.ERROR,
        ),
    )
}


def allowed(state: TemplateState) -> list[TemplateOperation]:
    """The operations a template in ``state`` accepts now, in table order."""
    return [op for op, t in TRANSITIONS.items() if state in t.sources]


def transition(
    operation: TemplateOperation, state: TemplateState, template_id: str = ""
) -> TemplateTransition:
    """The transition ``operation`` makes from ``state``; IllegalTransition if there is none."""
    t = TRANSITIONS[operation]
    if state not in t.sources:
        now = ", ".join(allowed(state)) or "none until the current one finishes"
        subject = f"template {template_id}" if template_id else "the template"
        raise IllegalTransition(f"cannot {operation} {subject}: it is {state}; allowed now: {now}")
    return t
