"""The Hyper-V host's file system, as far as the driver's image copies use it: files appended to
with ``Add-Content -Encoding Byte``, zero runs made by ``New-Object byte[]``, ``Get-FileHash``,
``Move-Item``, ``Remove-Item``. Paths are compared case-insensitively, as Windows does."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.simulators.winrm._powershell import Cmdlet, PSError

__all__ = ["HostFiles"]

_NS = "Microsoft.PowerShell.Commands"


class HostFiles:
    def __init__(self) -> None:
        self.files: dict[str, bytearray] = {}

    def cmdlets(self) -> dict[str, Cmdlet]:
        return {
            "Add-Content": self._add_content,
            "New-Object": self._new_object,
            "Get-FileHash": self._get_hash,
            "Move-Item": self._move,
            "Remove-Item": self._remove,
        }

    def get(self, path: str) -> bytes | None:
        found = self.files.get(path.lower())
        return None if found is None else bytes(found)

    def _missing(self, path: str, cmdlet: str) -> PSError:
        return PSError(
            f"PathNotFound,{_NS}.{cmdlet}",
            "ObjectNotFound",
            f"Cannot find path '{path}' because it does not exist.",
            "ItemNotFoundException",
        )

    def _add_content(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        value = params.get("Value")
        if params.get("Encoding") != "Byte" or not isinstance(value, bytes | bytearray):
            raise PSError(
                f"ArgumentException,{_NS}.AddContentCommand",
                "InvalidArgument",
                "the simulator appends bytes only: -Value byte[] -Encoding Byte",
            )
        self.files.setdefault(str(params["Path"]).lower(), bytearray()).extend(value)
        return []

    def _new_object(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        if params.get("TypeName") != "byte[]":
            raise PSError(
                f"TypeNotFound,{_NS}.NewObjectCommand",
                "InvalidType",
                f"the simulator makes byte[] only, not {params.get('TypeName')!r}",
            )
        return [bytes(int(params["ArgumentList"]))]

    def _get_hash(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        path = str(params["Path"])
        data = self.get(path)
        if data is None:
            raise self._missing(path, "GetFileHashCommand")
        if params.get("Algorithm", "SHA256") != "SHA256":
            raise PSError("ParameterArgumentValidationError", "InvalidData", "SHA256 only")
        return [{"Algorithm": "SHA256", "Hash": hashlib.sha256(data).hexdigest().upper()}]

    def _move(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        source, target = str(params["Path"]).lower(), str(params["Destination"]).lower()
        if source not in self.files:
            raise self._missing(str(params["Path"]), "MoveItemCommand")
        if target in self.files and not params.get("Force"):
            raise PSError(
                f"MoveItemIOError,{_NS}.MoveItemCommand",
                "WriteError",
                "Cannot create a file when that file already exists.",
            )
        self.files[target] = self.files.pop(source)
        return []

    def _remove(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        paths = params["Path"] if isinstance(params["Path"], list) else [params["Path"]]
        quiet = params.get("ErrorAction") == "SilentlyContinue"
        for path in paths:
            if self.files.pop(str(path).lower(), None) is None and not quiet:
                raise self._missing(str(path), "RemoveItemCommand")
        return []
