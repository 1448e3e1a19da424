"""A VM's spec as the driver's DomainSpec: its maxima become the domain's, and a spec written
before the maxima existed still reads."""

from __future__ import annotations

import msgspec

from actors.guest import domain_spec
from cloudcore.store.records import VM, VMSpec


def vm(spec: VMSpec) -> VM:
    return VM(id="vm-1", tenant_id="acme", datacenter_id="dc1", name="web", spec=spec)


def test_the_maxima_map_to_the_domains() -> None:
    spec = VMSpec(cpus=1, memory_mib=256, max_cpus=4, max_memory_mib=1024)
    domain = domain_spec(vm(spec))
    assert (domain.vcpus, domain.max_vcpus) == (1, 4)
    assert (domain.memory_mib, domain.max_memory_mib) == (256, 1024)


def test_without_maxima_the_domain_takes_its_size() -> None:
    domain = domain_spec(vm(VMSpec(cpus=2, memory_mib=512)))
    assert domain.max_vcpus is None and domain.max_memory_mib is None


def test_a_spec_stored_before_the_maxima_reads_with_none() -> None:
    old = msgspec.json.decode(b'{"cpus": 2, "memory_mib": 512}', type=VMSpec)
    assert old.max_cpus is None and old.live_limits() == (2, 512)


def test_the_live_limits_never_fall_below_the_size() -> None:
    spec = VMSpec(cpus=8, memory_mib=4096, max_cpus=4, max_memory_mib=8192)  # grown while stopped
    assert spec.live_limits() == (8, 8192)
