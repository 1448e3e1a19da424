"""The web console: server-rendered pages at ``/ui/`` for tenants and operators, made live with
htmx and Server-Sent Events, with noVNC for VM consoles. See :mod:`.session` for how a browser
logs in and why a form cannot be forged from another site."""

from cloudcore.app.web.app import add_web

__all__ = ["add_web"]
