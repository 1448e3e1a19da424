"""cloudcore: an actor-model IaaS cloud orchestrator.

The runtime lives in :mod:`cloudcore.runtime`; errors in :mod:`cloudcore.errors`; settings in
:mod:`cloudcore.config`.
"""

__version__ = "0.1.0"
