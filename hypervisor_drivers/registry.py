"""Hypervisor drivers are plugins: entry points in the ``cloudcore.hypervisor_drivers`` group.

A driver is loaded by name only when it is configured, so only its SDK is imported::

    [project.entry-points."cloudcore.hypervisor_drivers"]
    libvirt = "hypervisor_drivers.libvirt.driver:LibvirtDriver"
"""

from __future__ import annotations

from importlib.metadata import entry_points

from cloudcore.errors import ConfigError
from hypervisor_drivers.base import DriverSettings, HypervisorDriver

__all__ = ["ENTRY_POINT_GROUP", "available_drivers", "create_driver", "load_driver"]

ENTRY_POINT_GROUP = "cloudcore.hypervisor_drivers"


def available_drivers() -> list[str]:
    """The names of the installed hypervisor drivers, sorted. Imports none of them."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_driver(name: str) -> type[HypervisorDriver]:
    """The driver class registered as ``name``.

    Raises ``ConfigError`` when no driver has that name, when its module cannot be imported
    (its SDK is not installed: install the matching extra, e.g. ``cloudcore[libvirt]``), or when
    the entry point does not name a ``HypervisorDriver`` subclass.
    """
    matches = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not matches:
        known = ", ".join(available_drivers()) or "none installed"
        raise ConfigError(f"unknown hypervisor driver {name!r} (known: {known})")
    entry_point = next(iter(matches))
    try:
        loaded = entry_point.load()
    except ImportError as exc:
        raise ConfigError(
            f"hypervisor driver {name!r} ({entry_point.value}) cannot be imported: {exc}; "
            f"is the cloudcore[{name}] extra installed?"
        ) from exc
    if not (isinstance(loaded, type) and issubclass(loaded, HypervisorDriver)):
        raise ConfigError(
            f"hypervisor driver {name!r} ({entry_point.value}) is not a HypervisorDriver subclass"
        )
    return loaded


def create_driver(name: str, settings: DriverSettings) -> HypervisorDriver:
    """An unconnected instance of the driver registered as ``name``."""
    return load_driver(name)(settings)
