"""Remote spawn: which actor kinds a node can create, and which node gets a new actor.

Classes cannot travel, so spawnable actors are registered on each node under a kind name; a
node advertises its kinds and capabilities in its heartbeats, and a spawn with requirements
goes to an up node whose capabilities include every required ``key=value`` and that offers the
kind, in turn (round robin) among those that qualify.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from cloudcore.cluster.membership import Member
from cloudcore.errors import NoNodeMatches, NotFound
from cloudcore.runtime.cell import ActorFactory

__all__ = ["Placement", "satisfies"]


def satisfies(capabilities: Mapping[str, str], requirements: Mapping[str, str]) -> bool:
    """True if every required key is present with the required value."""
    return all(capabilities.get(key) == value for key, value in requirements.items())


class Placement:
    """The kinds this node can spawn, and the choice of a node for a remote spawn."""

    def __init__(self, kinds: Mapping[str, ActorFactory] | None = None) -> None:
        self._kinds: dict[str, ActorFactory] = dict(kinds or {})
        self._turn = itertools.count()

    def register(self, kind: str, factory: ActorFactory) -> None:
        """Let other nodes spawn ``factory`` here as ``kind`` (advertised from the next
        heartbeat on). Registering a kind again replaces it."""
        self._kinds[kind] = factory

    @property
    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def factory(self, kind: str) -> ActorFactory:
        try:
            return self._kinds[kind]
        except KeyError:
            raise NotFound(f"this node cannot spawn actors of kind {kind!r}") from None

    def choose(self, members: list[Member], kind: str, requirements: Mapping[str, str]) -> str:
        """The node for a new ``kind`` actor; NoNodeMatches (a NotFound) if none qualifies."""
        fits = [
            m.node
            for m in members
            if m.status == "up" and kind in m.kinds and satisfies(m.capabilities, requirements)
        ]
        if not fits:
            seen = ", ".join(
                f"{m.node}[{m.status}] {m.capabilities} kinds={m.kinds}" for m in members
            )
            raise NoNodeMatches(
                f"no up node offers kind {kind!r} with {dict(requirements)}; "
                f"known nodes: {seen or 'none'}"
            )
        return fits[next(self._turn) % len(fits)]
