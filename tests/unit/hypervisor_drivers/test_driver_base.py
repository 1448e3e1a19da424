"""The driver ABC and the plugin registry."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloudcore.errors import ConfigError
from hypervisor_drivers.base import DomainSpec, DriverSettings, HypervisorDriver, IscsiDisk
from hypervisor_drivers.libvirt import LibvirtDriver
from hypervisor_drivers.registry import available_drivers, create_driver, load_driver


def test_a_driver_missing_a_method_fails_at_instantiation() -> None:
    class Incomplete(HypervisorDriver):
        async def connect(self) -> None:
            pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(DriverSettings(uri="x://"))  # type: ignore[abstract]


def test_the_libvirt_driver_is_registered_and_loaded_by_name() -> None:
    assert "libvirt" in available_drivers()
    assert load_driver("libvirt") is LibvirtDriver
    driver = create_driver("libvirt", DriverSettings(uri="test:///default"))
    assert isinstance(driver, LibvirtDriver)


def test_an_unknown_driver_name_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown hypervisor driver 'vmwar'.*libvirt"):
        load_driver("vmwar")


def _install_plugin(root: Path, entry: str) -> None:
    dist = root / "cc_test_plugin-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cc-test-plugin\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[cloudcore.hypervisor_drivers]\n{entry}\n")


def test_an_entry_point_that_is_not_a_driver_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(tmp_path, "bogus = json:JSONDecoder\nbroken = cc_no_such_module:Driver")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="not a HypervisorDriver subclass"):
        load_driver("bogus")
    with pytest.raises(ConfigError, match=r"cannot be imported.*cloudcore\[broken\]"):
        load_driver("broken")


def test_only_the_configured_drivers_sdk_is_imported() -> None:
    script = textwrap.dedent(
        """
        import sys
        from hypervisor_drivers.registry import available_drivers, load_driver
        import hypervisor_drivers.base
        assert "libvirt" in available_drivers()
        assert "libvirt" not in sys.modules, "listing drivers imported the SDK"
        load_driver("libvirt")
        assert "libvirt" in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)


def test_secrets_are_not_shown_by_repr() -> None:
    settings = DriverSettings(uri="esx://h", username="root", password="hunter2")
    disk = IscsiDisk(host="h", iqn="iqn.x:y", chap_username="u", chap_password="hunter2")
    assert "hunter2" not in repr(settings) + repr(disk)
    assert "'***'" in repr(settings)


def test_a_spec_below_its_own_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="max_vcpus"):
        DomainSpec(uuid="u", name="n", vcpus=4, max_vcpus=2, memory_mib=64)
