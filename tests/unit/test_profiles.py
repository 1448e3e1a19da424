"""Profiles: which service groups a node runs, and the configurations refused at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudcore.app.node import with_profile
from cloudcore.app.profiles import plan_of
from cloudcore.config import load_settings
from cloudcore.errors import ConfigError

CLUSTERED = {
    "CLOUDCORE_TRANSPORT__KIND": "amqp",
    "CLOUDCORE_STORE__BACKEND": "postgres",
    "CLOUDCORE_EVENTS__BACKEND": "redis",
}


def test_monolithic_is_the_default_and_runs_everything() -> None:
    plan = plan_of(load_settings(environ={}))
    assert (plan.profile, plan.api, plan.cluster_services) == ("monolithic", True, True)
    assert plan.datacenters is None and plan.runs_datacenters


def test_server_runs_the_api_and_cluster_services_and_no_datacenter() -> None:
    plan = plan_of(load_settings(environ={**CLUSTERED, "CLOUDCORE_NODE__PROFILE": "server"}))
    assert (plan.api, plan.cluster_services, plan.datacenters) == (True, True, frozenset())
    assert not plan.runs_datacenters


def test_remote_services_runs_the_datacenters_its_capabilities_name_and_no_api() -> None:
    env = {
        **CLUSTERED,
        "CLOUDCORE_NODE__PROFILE": "remote-services",
        "CLOUDCORE_NODE__CAPABILITIES": '{ datacenter = "dc1, dc2", hypervisor = "kvm" }',
    }
    plan = plan_of(load_settings(environ=env))
    assert (plan.api, plan.cluster_services) == (False, False)
    assert plan.datacenters == frozenset({"dc1", "dc2"})


def test_a_bad_profile_is_a_config_error_naming_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"node\.profile must be one of monolithic, server"):
        load_settings(environ={"CLOUDCORE_NODE__PROFILE": "serverless"})
    with pytest.raises(ConfigError, match=r"--profile: node\.profile must be one of"):
        with_profile(load_settings(environ={}), "everything")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLOUDCORE_NODE__PROFILE": "server"}, r"needs transport\.kind = 'amqp'"),
        (
            {
                **CLUSTERED,
                "CLOUDCORE_STORE__BACKEND": "sqlite",
                "CLOUDCORE_NODE__PROFILE": "server",
            },
            r"needs store\.backend = 'postgres'",
        ),
        (
            {**CLUSTERED, "CLOUDCORE_NODE__PROFILE": "remote-services"},
            r"needs the datacenters it runs in node\.capabilities\.datacenter",
        ),
        (
            {
                **CLUSTERED,
                "CLOUDCORE_NODE__PROFILE": "server",
                "CLOUDCORE_NODE__CAPABILITIES": '{ datacenter = "dc1" }',
            },
            r"'server' runs no datacenter",
        ),
    ],
)
def test_a_profile_that_cannot_work_is_refused_naming_the_key(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_of(load_settings(environ=env))


def test_serve_with_a_bad_profile_exits_2_with_the_error_logged(tmp_path: Path) -> None:
    env = {**os.environ, "CLOUDCORE_LOG__FORMAT": "json", "CLOUDCORE_NODE__DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "cloudcore.app.cli", "serve", "--profile", "server"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2
    assert "config.invalid" in done.stderr and "transport.kind = 'amqp'" in done.stderr
