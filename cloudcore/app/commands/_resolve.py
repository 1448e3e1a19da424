"""Names wherever ids are taken: ``vm show web``.

:func:`resolve` asks the kind's listing for the records of that exact name the caller can see
(``?name=``, one request): one is its id; several are an error listing their ids; none means
the argument is an id, sent as given (a missing one is the API's own 404). Every command that
takes a VM, host, datacenter or template (and, as they come, volumes and networks) goes through
it, so a name works everywhere an id does.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudcore.app.client import ApiFailure, Client
from cloudcore.app.commands._api import CliError

__all__ = ["DATACENTER", "HOST", "NETWORK", "TEMPLATE", "VM", "VOLUME", "Kind", "resolve"]

#: How many namesakes an ambiguity lists.
_SHOWN = 10


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of record found by name: its listing's path and what a person calls it."""

    path: str
    label: str


VM = Kind("/vms", "VM")
HOST = Kind("/hosts", "host")
DATACENTER = Kind("/datacenters", "datacenter")
TEMPLATE = Kind("/templates", "template")
VOLUME = Kind("/volumes", "volume")
NETWORK = Kind("/networks", "network")


async def resolve(client: Client, kind: Kind, ref: str) -> str:
    """The id ``ref`` names: the record named ``ref`` if exactly one is, else ``ref`` itself.
    CliError (``ambiguous_name``, the candidates' ids in ``details``) if several are."""
    try:
        page = await client.call("GET", kind.path, params={"name": ref, "limit": _SHOWN})
    except ApiFailure as exc:
        if exc.status in (400, 403, 404, 422):  # no listing by name here, or not for this caller
            return ref
        raise
    items = page.get("items") or []
    if not items or any(item.get("id") == ref for item in items):
        return ref
    if len(items) == 1:
        return str(items[0]["id"])
    total = page.get("total") or len(items)
    ids = [str(item["id"]) for item in items]
    listed = ", ".join(
        f"{item['id']} (tenant {item['tenant_id']})" if item.get("tenant_id") else str(item["id"])
        for item in items
    )
    more = f" and {total - len(items)} more" if total > len(items) else ""
    raise CliError(
        f"{total} {kind.label}s are named {ref!r}: {listed}{more}; give an id",
        code="ambiguous_name",
        candidates=ids,
    )
