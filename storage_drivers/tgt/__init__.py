"""The tgt storage driver (Linux SCSI target framework, Debian's ``tgt``)."""

from storage_drivers.tgt.driver import TgtDriver

__all__ = ["TgtDriver"]
