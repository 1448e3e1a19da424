"""Storage driver plugins (iSCSI)."""
