"""Settings: the file, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudcore.config import default_config_path, load_settings
from cloudcore.errors import ConfigError


def test_the_shipped_defaults_load() -> None:
    settings = load_settings(default_config_path(), environ={})
    assert settings.node.id == "node-1"
    assert settings.runtime.ask_timeout == 5.0


def test_environment_variables_override_the_file() -> None:
    settings = load_settings(
        default_config_path(),
        environ={
            "CLOUDCORE_LOG__LEVEL": "debug",
            "CLOUDCORE_RUNTIME__ASK_TIMEOUT": "2.5",
            "CLOUDCORE_NODE__CAPABILITIES": '{ datacenter = "dc1" }',
            "CLOUDCORE_ADMIN_TOKEN": "not a setting: no double underscore",
        },
    )
    assert settings.log.level == "debug"
    assert settings.runtime.ask_timeout == 2.5
    assert settings.node.capabilities == {"datacenter": "dc1"}


def test_an_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[runtime]\nask_timout = 3\n")
    with pytest.raises(ConfigError, match="ask_timout") as caught:
        load_settings(path, environ={})
    assert str(path) in str(caught.value)


def test_an_unknown_section_or_key_in_the_environment_is_named() -> None:
    with pytest.raises(ConfigError, match="CLOUDCORE_LOG__LEVL"):
        load_settings(default_config_path(), environ={"CLOUDCORE_LOG__LEVL": "debug"})
    with pytest.raises(ConfigError, match="unknown section 'nodes'"):
        load_settings(default_config_path(), environ={"CLOUDCORE_NODES__ID": "x"})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CLOUDCORE_RUNTIME__ASK_TIMEOUT": "soon"}, "runtime.ask_timeout"),
        ({"CLOUDCORE_RUNTIME__ASK_TIMEOUT": "-1"}, "ask_timeout must be > 0"),
        ({"CLOUDCORE_LOG__LEVEL": "loud"}, "log.level"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(default_config_path(), environ=env)


def test_a_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[runtime\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, environ={})


def test_settings_are_frozen() -> None:
    settings = load_settings(default_config_path(), environ={})
    with pytest.raises(AttributeError):
        settings.node.id = "other"  # type: ignore[misc]


def _settings_keys() -> list[tuple[str, str]]:
    from cloudcore.config import Settings, _section_fields

    return [
        (section, key)
        for section, kind in Settings.__annotations__.items()
        for key in _section_fields(kind)
    ]


@pytest.mark.parametrize("joined", ["{s}{k}", "{s}_{k}"])
def test_a_setting_with_its_separator_lost_is_refused_naming_the_right_one(joined: str) -> None:
    """Every setting: CLOUDCORE_LOGLEVEL or CLOUDCORE_LOG_LEVEL is not ignored but refused, as a
    misspelt key is, with the variable the operator meant."""
    for section, key in _settings_keys():
        var = "CLOUDCORE_" + joined.format(s=section, k=key).upper()
        with pytest.raises(ConfigError, match=rf"did you mean CLOUDCORE_{section.upper()}__"):
            load_settings(environ={var: "x"})


@pytest.mark.parametrize(
    "var",
    ["CLOUDCORE_TOKEN", "CLOUDCORE_API_URL", "CLOUDCORE_ADMIN_TOKEN", "CLOUDCORE_CONFIG",
     "CLOUDCORE_DEBUG", "CLOUDCORE_HISTORY", "CLOUDCORE_TEST_POSTGRES", "CLOUDCORE_BENCH_REDIS",
     "CLOUDCORE_VSPHERE_PASSWORD", "CLOUDCORE_FUZZ_EXAMPLES"],
)  # fmt: skip
def test_the_variables_that_are_not_settings_are_left_alone(var: str) -> None:
    load_settings(environ={var: "x"})
