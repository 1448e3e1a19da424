"""tgtadm's show output parsed, and its failures translated."""

from __future__ import annotations

import pytest

from cloudcore.errors import BackendUnavailable
from storage_drivers.tgt._client import parse_targets
from storage_drivers.tgt._errors import TgtadmRefused, translate

SHOW = """\
Target 1: iqn.2026-12.org.cloudcore:v1
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 3
            Initiator: iqn.2026-12.test:h1 alias: none
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            Backing store path: None
        LUN: 1
            Type: disk
            Size: 67 MB, Block size: 512
            Backing store path: /pool/volumes/v1.img
            Backing store flags:
    Account information:
        cc-v1
    ACL information:
        iqn.2026-12.test:h1
Target 4: iqn.2026-12.org.cloudcore:v2
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Backing store path: None
    Account information:
    ACL information:
"""


def test_show_output_gives_each_targets_luns_sessions_accounts_and_acls() -> None:
    first, second = parse_targets(SHOW)
    assert (first.tid, first.iqn) == (1, "iqn.2026-12.org.cloudcore:v1")
    assert first.luns == {0: "None", 1: "/pool/volumes/v1.img"}
    assert (first.sessions, first.accounts, first.acls) == (1, ["cc-v1"], ["iqn.2026-12.test:h1"])
    assert (second.tid, second.luns, second.sessions) == (4, {0: "None"}, 0)
    assert (second.accounts, second.acls) == ([], [])
    assert parse_targets("") == []


@pytest.mark.parametrize(
    ("stderr", "code"),
    [
        ("tgtadm: can't find the target\n", "no_target"),
        ("tgtadm: can't find the logical unit\n", "no_lun"),
        ("tgtadm: can't find the account\n", "no_account"),
        ("tgtadm: this access control rule does not exist\n", "no_acl"),
        ("tgtadm: this target already exists\n", "exists"),
        ("tgtadm: something new\n", "tgtadm"),
    ],
)
def test_refusals_are_translated_by_their_words(stderr: str, code: str) -> None:
    error = translate(22, stderr, "new target")
    assert isinstance(error, TgtadmRefused) and error.code == code
    assert "new target" in str(error)


def test_an_unreachable_tgtd_is_backend_unavailable() -> None:
    error = translate(107, "tgtadm: failed to send request hdr to tgt daemon\n", "show targets")
    assert isinstance(error, BackendUnavailable) and error.retryable
