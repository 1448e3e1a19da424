"""Which API token the command line and the console use."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["resolve_token"]


def resolve_token(given: str | None, config: str | None) -> str | None:
    """``given`` (--token), else ``$CLOUDCORE_TOKEN``, else the admin token a node on this
    machine wrote to ``<data_dir>/admin-token`` (``data_dir`` from the settings of ``config``);
    None if there is none."""
    if given and given.strip():
        return given.strip()
    from_env = os.environ.get("CLOUDCORE_TOKEN", "").strip()
    if from_env:
        return from_env
    from cloudcore.app.gateway.bootstrap import ADMIN_TOKEN_FILE
    from cloudcore.config import load_settings
    from cloudcore.errors import CloudcoreError

    try:
        data_dir = load_settings(config).node.data_dir
    except CloudcoreError:  # a bad settings file: no file token, and `serve` says why
        return None
    with contextlib.suppress(OSError):
        return (Path(data_dir) / ADMIN_TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    return None
