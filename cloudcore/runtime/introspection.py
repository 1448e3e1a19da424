"""A plain-data picture of the actor tree, for the operator console and the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from cloudcore.runtime.cell import ActorCell

__all__ = ["ActorInfo", "snapshot"]


class ActorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One actor as it is now, with its children. Encodes to JSON as it stands."""

    path: str
    name: str
    class_name: str
    status: str
    mailbox_depth: int
    processed: int
    restarts: int
    last_failure: str | None
    children: tuple[ActorInfo, ...] = ()

    def walk(self) -> Iterator[ActorInfo]:
        """This actor and all below it, parents before children."""
        yield self
        for child in self.children:
            yield from child.walk()


def snapshot(cell: ActorCell) -> ActorInfo:
    """The subtree rooted at ``cell``."""
    children = tuple(snapshot(c) for c in cell.child_cells())
    return ActorInfo(
        path=cell.path,
        name=cell.name,
        class_name=type(cell.actor).__qualname__,
        status=cell.status,
        mailbox_depth=cell.mailbox_depth,
        processed=cell.processed,
        restarts=cell.restarts,
        last_failure=cell.last_failure,
        children=children,
    )
