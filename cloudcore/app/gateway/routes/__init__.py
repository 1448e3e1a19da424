"""The gateway's endpoints, one module per resource. Every module here that defines ``api``
(a :class:`~cloudcore.app.gateway.api.Api`) is served; nothing else has to list it."""

from __future__ import annotations

import importlib
import pkgutil

from cloudcore.app.gateway.api import Api

__all__ = ["all_apis"]


def all_apis() -> list[Api]:
    apis = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        api = getattr(module, "api", None)
        if isinstance(api, Api):
            apis.append(api)
    return apis
