"""``[api] workers``: only a server node may have more than one, and then every worker binds
the one port (SO_REUSEPORT); with one, a taken port is still refused naming api.port."""

from __future__ import annotations

import msgspec
import pytest

from cloudcore.app.gateway.app import listen
from cloudcore.app.profiles import plan_of
from cloudcore.app.workers import check_workers
from cloudcore.config import ApiSettings, Settings
from cloudcore.errors import ConfigError


def test_more_than_one_worker_needs_a_server_node() -> None:
    settings = msgspec.structs.replace(Settings(), api=ApiSettings(workers=2))
    with pytest.raises(ConfigError, match=r"api\.workers = 2 needs node\.profile = 'server'"):
        check_workers(settings, plan_of(settings))
    check_workers(Settings(), plan_of(Settings()))  # one: any profile


def test_workers_share_one_port_and_a_single_listener_keeps_it_to_itself() -> None:
    first = listen(ApiSettings(port=0, workers=2))
    try:
        port = first.getsockname()[1]
        second = listen(ApiSettings(port=port, workers=2))
        second.close()
        with pytest.raises(ConfigError, match=r"api\.port"):
            listen(ApiSettings(port=port, workers=1)).close()
    finally:
        first.close()


def test_workers_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match=r"api\.workers must be >= 1"):
        ApiSettings(workers=0)
