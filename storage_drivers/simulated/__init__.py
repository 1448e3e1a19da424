"""The simulated storage driver: an in-process stand-in for a storage server, for the embedded
demo and for tests above the driver layer. It stores no data and serves no iSCSI portal."""

from storage_drivers.simulated.driver import SimulatedStorageDriver

__all__ = ["SimulatedStorageDriver"]
