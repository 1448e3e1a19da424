"""Template images into XenServer: a VDI created on the host's SR, its content sent with an HTTP
PUT to XAPI's ``/import_raw_vdi?format=vhd`` (the session id in the query, as XAPI takes it).

The image is a VHD (qemu-img's ``vpc``, written with ``force_size`` so its size is exact); the
VDI's virtual size is read from the VHD footer (its last 512 bytes: the ``conectix`` cookie and
the current size at byte 48). Blocking; runs in the driver's worker thread.
"""

from __future__ import annotations

import http.client
import os
import ssl
from typing import Any
from urllib.parse import urlencode, urlsplit

from cloudcore.errors import DriverError
from hypervisor_drivers.types import FileDisk

__all__ = ["import_image", "put_vdi", "remove_image", "vhd_virtual_size"]

_BLOCK = 1024 * 1024


def vhd_virtual_size(path: str) -> int:
    """The virtual size a VHD's footer declares; DriverError if it has none."""
    with open(path, "rb") as image:
        image.seek(-512, os.SEEK_END)
        footer = image.read(512)
    if not footer.startswith(b"conectix"):
        raise DriverError(f"{path} is not a VHD (no footer)", code="import")
    return int.from_bytes(footer[48:56], "big")


def put_vdi(uri: str, session_id: str, vdi: str, path: str, *, verify_tls: bool = True) -> None:
    """Send the VHD ``path`` as the content of ``vdi`` to the XAPI at ``uri``."""
    parts = urlsplit(uri)
    connection: Any
    if parts.scheme == "https":
        context = ssl.create_default_context()
        if not verify_tls:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port or 443, context=context, blocksize=_BLOCK
        )
    else:
        connection = http.client.HTTPConnection(
            parts.hostname or "", parts.port or 80, blocksize=_BLOCK
        )
    query = urlencode({"vdi": vdi, "format": "vhd", "session_id": session_id})
    try:
        with open(path, "rb") as image:
            size = os.fstat(image.fileno()).st_size
            headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
            connection.request("PUT", f"/import_raw_vdi?{query}", image, headers)
            reply = connection.getresponse()
            reply.read()
    except OSError as exc:
        raise DriverError(f"the VDI import failed: {exc}", code="import") from exc
    finally:
        connection.close()
    if reply.status != 200:
        raise DriverError(
            f"XAPI refused the VDI import: {reply.status} {reply.reason}", code=str(reply.status)
        )


def import_image(client: Any, uri: str, path: str, name: str, *, verify_tls: bool) -> FileDisk:
    """A VDI named ``name`` on the client's SR holding the VHD ``path`` (an earlier one of that
    name, unused, is replaced); the disk ``define`` takes (the VDI's uuid)."""
    size = vhd_virtual_size(path)
    remove_image(client, name)
    vdi = client.x.VDI.create(
        {
            "name_label": name,
            "name_description": "a cloudcore template's image",
            "SR": client.sr,
            "virtual_size": str(size),
            "type": "user",
            "sharable": False,
            "read_only": False,
            "other_config": {},
            "xenstore_data": {},
            "sm_config": {},
            "tags": [],
        }
    )
    try:
        put_vdi(uri, client.session._session, vdi, path, verify_tls=verify_tls)
    except BaseException:
        client.x.VDI.destroy(vdi)
        raise
    return FileDisk(path=str(client.x.VDI.get_uuid(vdi)), format="vpc")


def remove_image(client: Any, name: str) -> None:
    """Destroy the unused VDIs named ``name`` on the client's SR."""
    for ref in client.x.VDI.get_by_name_label(name):
        if client.x.VDI.get_SR(ref) == client.sr and not client.x.VDI.get_VBDs(ref):
            client.x.VDI.destroy(ref)
