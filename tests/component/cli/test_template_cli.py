"""``cloudcore template ...`` end to end against a real ``cloudcore serve``: a person uploads a
qcow2 file with a progress bar, converts it, deploys a VM from it, and deletes both."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.component.cli.conftest import Node

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "qemu-img"], capture_output=True).returncode != 0,
    reason="qemu-img is not installed (scripts/lib.sh installs qemu-utils)",
)


def qcow2_file(tmp_path: Path) -> Path:
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as f:
        f.write(hashlib.sha256(b"cli").digest() * (3 * 1024 * 1024 // 32))
        f.truncate(32 * 1024 * 1024)
    out = tmp_path / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True
    )
    return out


@pytest.mark.timeout(120)  # nine CLI processes, each a Python start (seconds under load)
def test_upload_convert_deploy_and_delete_a_template_from_the_command_line(
    node: Node, tmp_path: Path
) -> None:
    image = qcow2_file(tmp_path)
    made = json.loads(
        node.ok(
            "template", "create", "--name", "cli-golden", "--min-cpus", "1", "-o", "json"
        ).stdout
    )
    tid = made["id"]
    assert made["state"] == "NEW"

    uploaded = node.ok("template", "upload", tid, str(image), "-o", "json")
    template = json.loads(uploaded.stdout)
    assert template["state"] == "AVAILABLE" and template["disk_format"] == "qcow2"
    assert template["checksum"] == hashlib.sha256(image.read_bytes()).hexdigest()
    # Not a terminal: a progress line per 10 % of the bytes, then the outcome.
    progress = [ln for ln in uploaded.stderr.splitlines() if ln.startswith("upload disk.qcow2:")]
    assert len(progress) >= 4 and "MiB/s" in progress[0]
    assert "100%" in progress[-2] and progress[-1].endswith("AVAILABLE")

    converted = node.ok("template", "convert", tid, "vmdk", "--compare", "--wait", "-o", "json")
    done = json.loads(converted.stdout)
    assert done["state"] == "SUCCEEDED"
    assert [s["name"] for s in done["steps"]] == ["convert", "compare", "store"]
    assert "convert" in converted.stderr  # the task's steps on the progress bar

    listed = node.ok("template", "list")
    row = next(line for line in listed.stdout.splitlines() if tid in line)
    assert "AVAILABLE" in row and "qcow2,vmdk" in row

    deployed = json.loads(
        node.ok(
            "vm", "create", "--name", "from-cli", "--datacenter", "dc1", "--cpus", "1",
            "--memory", "256", "--template", tid, "--wait", "-o", "json",
        ).stdout
    )  # fmt: skip
    assert deployed["state"] == "SUCCEEDED", deployed
    vm_id = str(deployed["subject"]).removeprefix("vm/")

    refused = node.cli("template", "delete", tid)
    assert refused.returncode == 1 and vm_id in refused.stderr and "[conflict]" in refused.stderr
    node.ok("vm", "delete", vm_id, "--wait")
    node.ok("template", "delete", tid)
    gone = node.cli("template", "show", tid)
    assert gone.returncode == 1 and "[not_found]" in gone.stderr


def test_a_file_that_is_no_image_is_refused_with_the_reason(node: Node, tmp_path: Path) -> None:
    tid = json.loads(node.ok("template", "create", "--name", "junk", "-o", "json").stdout)["id"]
    junk = tmp_path / "junk.qcow2"
    qemu = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(junk)],
        check=True,
    )
    assert qemu.returncode == 0
    result = node.cli("template", "upload", tid, str(junk))
    assert result.returncode == 1
    assert "backing file" in result.stderr and "[image_rejected]" in result.stderr
