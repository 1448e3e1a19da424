"""The HTTP gateway: a thin aiohttp layer in front of the orchestrator's actors.

``create_app`` builds the application from every route module in
:mod:`cloudcore.app.gateway.routes`; ``start_api`` serves it. See ``api.py`` for how an endpoint is
declared once for routing, validation and the OpenAPI document.
"""

from cloudcore.app.gateway.app import PREFIX, create_app, start_api
from cloudcore.app.gateway.context import Gateway

__all__ = ["PREFIX", "Gateway", "create_app", "start_api"]
