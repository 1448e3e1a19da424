"""Affinity groups: which VMs must share a host, and which must not.

A VM joins a group by naming it in ``VMSpec.affinity_group``; the group's policy comes from
``VMSpec.extra["affinity"]``:

- ``"anti-affinity"`` (the default when a group is named without a policy): no two VMs of the
  group on one host, e.g. the replicas of a database.
- ``"affinity"``: every VM of the group on the same host as the group's VMs already placed (the
  first one goes wherever it fits), e.g. an application and its cache.

Groups belong to a tenant: two tenants' groups called ``web`` are different groups, so one tenant
can never pull its VMs onto, or push them off, another tenant's hosts. The scheduler keys a group
by :func:`group_key`. The policy is read from the VM being placed; give every VM of a group the same
one.
"""

from __future__ import annotations

from enum import StrEnum

from cloudcore.errors import InvalidRecord
from cloudcore.store.records import VMSpec

__all__ = ["AFFINITY_KEY", "Policy", "group_key", "policy_of"]

#: ``VMSpec.extra`` key that holds the group's policy.
AFFINITY_KEY = "affinity"


class Policy(StrEnum):
    """How the VMs of one affinity group are placed relative to each other."""

    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"


def group_key(tenant_id: str, spec: VMSpec) -> str | None:
    """The scheduler's key of a VM's group (``<tenant_id>/<group>``), or None if it has none."""
    group = spec.affinity_group
    return None if group is None else f"{tenant_id}/{group}"


def policy_of(spec: VMSpec) -> Policy | None:
    """The VM's group policy: None without a group; anti-affinity if the group has no policy.

    Raises InvalidRecord if ``spec.extra["affinity"]`` is neither policy.
    """
    if spec.affinity_group is None:
        return None
    text = spec.extra.get(AFFINITY_KEY)
    if text is None:
        return Policy.ANTI_AFFINITY
    try:
        return Policy(text)
    except ValueError:
        raise InvalidRecord(
            f"spec.extra[{AFFINITY_KEY!r}] of affinity group {spec.affinity_group!r} must be "
            f"'affinity' or 'anti-affinity', got {text!r}"
        ) from None
