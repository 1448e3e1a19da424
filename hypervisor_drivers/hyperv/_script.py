"""PowerShell scripts for the Hyper-V driver, with arguments passed as data.

Every script has the same frame: errors stop it (``$ErrorActionPreference = 'Stop'``); the
arguments arrive as JSON, base64-encoded inside a single-quoted literal and decoded into ``$a``
(the base64 alphabet cannot close the quote, so no VM name, path or note can become code); the
body refers to them only as ``$a.name``; a failure writes the error record (its
``FullyQualifiedErrorId``, category and message) to stderr as JSON and exits 1.
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["framed"]

_PRELUDE = "$ErrorActionPreference = 'Stop'\n$ProgressPreference = 'SilentlyContinue'\ntry {\n"
_DECODE = (
    "$a = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('{}')) | ConvertFrom-Json\n"
)
_EPILOGUE = (
    "} catch {\n"
    "[Console]::Error.WriteLine((@{ FullyQualifiedErrorId = $_.FullyQualifiedErrorId; "
    "Category = [string]$_.CategoryInfo.Category; Message = $_.Exception.Message } "
    "| ConvertTo-Json -Compress))\n"
    "exit 1\n"
    "}\n"
)


def framed(body: list[str], args: dict[str, Any] | None = None) -> str:
    """The script running ``body`` (PowerShell lines that read arguments from ``$a``)."""
    encoded = base64.b64encode(json.dumps(args or {}).encode()).decode("ascii")
    return _PRELUDE + _DECODE.replace("{}", encoded) + "\n".join(body) + "\n" + _EPILOGUE
