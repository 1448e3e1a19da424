"""Template images copied to the host's datastore: HTTP PUTs to vCenter's ``/folder`` file
service (the datastore's HTTP access, with the session's cookie), removed with the FileManager.

ESXi runs a VMDK as a descriptor (``name.vmdk``, a few lines of text) and a flat extent
(``name-flat.vmdk``, the disk's raw bytes), not the single-file sparse VMDK of hosted products:
the driver takes the template's raw image as the extent and writes the descriptor itself.
A VM from a template gets its own copy at ``[datastore] cc-<vm>/cc-<vm>.vmdk`` (no linked
clone: vSphere's needs a snapshot of a template VM, which is not modelled here).

Blocking; runs in the driver's worker threads.
"""

from __future__ import annotations

import http.client
import os
import ssl
from typing import Any
from urllib.parse import quote, urlencode

from pyVmomi import vim

from cloudcore.errors import DriverError
from hypervisor_drivers.types import FileDisk
from hypervisor_drivers.vsphere._connection import Session
from hypervisor_drivers.vsphere._inventory import HostRefs, wait_task

__all__ = ["remove_image", "upload_image"]

_BLOCK = 1024 * 1024


def _tls(session: Session) -> ssl.SSLContext:
    key = session.key
    if key.verify_tls:
        return ssl.create_default_context(cafile=key.ca_file)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the driver's verify_tls=false: a simulator only
    return context


def upload_image(session: Session, refs: HostRefs, path: str, name: str) -> FileDisk:
    """PUT the local raw image ``path`` as the flat extent ``[datastore] name/name-flat.vmdk``
    and its descriptor ``name/name.vmdk``; the disk (the descriptor)."""
    size = os.stat(path).st_size
    if size % 512:
        raise DriverError(f"a raw image of {size} bytes is not whole sectors", code="upload")
    with open(path, "rb") as extent:
        _put(session, refs, f"{name}/{name}-flat.vmdk", extent, size)
    descriptor = _descriptor(f"{name}-flat.vmdk", size // 512)
    _put(session, refs, f"{name}/{name}.vmdk", descriptor, len(descriptor))
    return FileDisk(path=f"[{refs.datastore_name}] {name}/{name}.vmdk", format="vmdk")


def _descriptor(extent: str, sectors: int) -> bytes:
    """An ESXi VMDK descriptor of one flat extent (createType vmfs)."""
    return (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="vmfs"\n\n# Extent description\n'
        f'RW {sectors} VMFS "{extent}"\n\n# The Disk Data Base\n#DDB\n\n'
        'ddb.adapterType = "lsilogic"\nddb.virtualHWVersion = "13"\n'
    ).encode()


def _put(session: Session, refs: HostRefs, remote: str, body: Any, size: int) -> None:
    query = urlencode({"dcPath": refs.datacenter.name, "dsName": refs.datastore_name})
    key = session.key
    connection = http.client.HTTPSConnection(
        key.host, key.port, timeout=key.timeout, context=_tls(session), blocksize=_BLOCK
    )
    headers = {
        "Cookie": _cookie(session.si),
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
    }
    try:
        connection.request("PUT", f"/folder/{quote(remote)}?{query}", body, headers)
        reply = connection.getresponse()
        detail = reply.read(500).decode(errors="replace").strip()
    except OSError as exc:
        raise DriverError(f"the upload of {remote} failed: {exc}", code="upload") from exc
    finally:
        connection.close()
    if reply.status not in (200, 201, 204):
        raise DriverError(
            f"the datastore refused the upload of {remote}: {reply.status} {detail}",
            code=str(reply.status),
        )


def remove_image(session: Session, refs: HostRefs, name: str) -> None:
    """Delete ``[datastore] name`` (the directory of the copy); gone already is fine."""
    manager = session.content.fileManager
    try:
        wait_task(
            session.content,
            manager.DeleteDatastoreFile_Task(
                name=f"[{refs.datastore_name}] {name}", datacenter=refs.datacenter
            ),
        )
    except vim.fault.FileNotFound:
        return


def _cookie(si: Any) -> str:
    """The session cookie pyvmomi's stub holds (``vmware_soap_session="..."``)."""
    return str(si._stub.cookie)
