"""What a VM counts against its tenant's quotas. It is taken in the create's own transaction
(:meth:`Store.create_vm`) and given back, or moved, in the transaction of the change that frees
it (the claim calls of :mod:`actors.claims`). The rule of what counts is the store's
(:mod:`cloudcore.store.usage`), so a reconciliation recomputes the same."""

from __future__ import annotations

from cloudcore.store.usage import QUOTA_RESOURCES, vm_usage

__all__ = ["QUOTA_RESOURCES", "vm_usage"]
