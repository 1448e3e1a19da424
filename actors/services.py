"""What the domain actors share: the store, the event bus, settings, task waiters and the
registry of the tasks being driven (which the watchdog leaves alone).

Actors never publish to the bus themselves: an event is written to the store with the change
that causes it (``events=`` of the store's writes, or ``store.write_events``), and the node's
outbox relay publishes it. So a bus outage or a crash loses none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from actors.journal import TaskWaiters
from actors.template_disks import TemplateDisks
from actors.watchdog import Runners
from cloudcore.config import OrchestratorSettings
from cloudcore.events import EventBus
from cloudcore.store import Store
from cloudcore.store.records import Host
from hypervisor_drivers.base import DriverSettings, HypervisorDriver

__all__ = ["DriverSlot", "OrchestratorSettings", "Services", "default_driver", "driver_settings"]


@dataclass(slots=True)
class Services:
    store: Store
    events: EventBus
    settings: OrchestratorSettings = field(default_factory=OrchestratorSettings)
    waiters: TaskWaiters = field(default_factory=TaskWaiters)
    #: The tasks an actor of this process drives now (what the watchdog leaves alone).
    runners: Runners = field(default_factory=Runners)
    #: Makes the (unconnected) driver of a host; by default the plugin its record names.
    driver_factory: Callable[[Host], HypervisorDriver] = field(default=lambda h: default_driver(h))
    #: Linked-clone disks of VMs deployed from templates (None: a VM gets no disk from its
    #: template, as with no image library).
    disks: TemplateDisks | None = None

    def __post_init__(self) -> None:
        if self.disks is not None:  # a deploy waits for a conversion as the API waits for tasks
            self.disks.waiters = self.waiters


#: Prefix of host capabilities that are settings of the host's driver (``driver.domain_type``).
DRIVER_OPTION = "driver."


class DriverSlot:
    """The live driver of one host, shared by the host actor and its VM actors. A driver whose
    connection was lost is not reused: the host puts a fresh one in the slot and connects it."""

    __slots__ = ("current",)

    def __init__(self, driver: HypervisorDriver) -> None:
        self.current = driver


def driver_settings(host: Host) -> DriverSettings:
    """How to reach ``host``'s hypervisor: the URI in ``host.address``; the host's
    ``driver.<key>`` capabilities become the driver's ``extra`` settings."""
    extra = {
        key.removeprefix(DRIVER_OPTION): value
        for key, value in host.capabilities.items()
        if key.startswith(DRIVER_OPTION)
    }
    return DriverSettings(uri=host.address, extra=extra)


def default_driver(host: Host) -> HypervisorDriver:
    """The driver plugin ``host.hypervisor`` names, with :func:`driver_settings`."""
    from hypervisor_drivers.registry import create_driver

    return create_driver(host.hypervisor, driver_settings(host))
