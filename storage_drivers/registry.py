"""Storage drivers are plugins: entry points in the ``cloudcore.storage_drivers`` group.

A driver is loaded by name only when it is configured, so only its tools are needed::

    [project.entry-points."cloudcore.storage_drivers"]
    tgt = "storage_drivers.tgt.driver:TgtDriver"
"""

from __future__ import annotations

from importlib.metadata import entry_points

from cloudcore.errors import ConfigError
from storage_drivers.base import StorageDriver, StorageSettings

__all__ = ["ENTRY_POINT_GROUP", "available_drivers", "create_driver", "load_driver"]

ENTRY_POINT_GROUP = "cloudcore.storage_drivers"


def available_drivers() -> list[str]:
    """The names of the installed storage drivers, sorted. Imports none of them."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_driver(name: str) -> type[StorageDriver]:
    """The driver class registered as ``name``.

    Raises ``ConfigError`` when no driver has that name, when its module cannot be imported, or
    when the entry point does not name a ``StorageDriver`` subclass.
    """
    matches = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not matches:
        known = ", ".join(available_drivers()) or "none installed"
        raise ConfigError(f"unknown storage driver {name!r} (known: {known})")
    entry_point = next(iter(matches))
    try:
        loaded = entry_point.load()
    except ImportError as exc:
        raise ConfigError(
            f"storage driver {name!r} ({entry_point.value}) cannot be imported: {exc}"
        ) from exc
    if not (isinstance(loaded, type) and issubclass(loaded, StorageDriver)):
        raise ConfigError(
            f"storage driver {name!r} ({entry_point.value}) is not a StorageDriver subclass"
        )
    return loaded


def create_driver(name: str, settings: StorageSettings) -> StorageDriver:
    """An unconnected instance of the driver registered as ``name``."""
    return load_driver(name)(settings)
