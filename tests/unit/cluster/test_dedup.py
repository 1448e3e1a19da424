"""The duplicate window: bounded, O(1), and (with a journal) surviving a restart."""

from __future__ import annotations

from pathlib import Path

from cloudcore.cluster import DedupWindow


def test_a_key_seen_twice_is_a_duplicate() -> None:
    window = DedupWindow(10)
    assert window.add((1, 1))
    assert not window.add((1, 1))
    assert window.add((2, 1))  # same counter, other sender incarnation


def test_the_window_forgets_the_oldest_keys() -> None:
    window = DedupWindow(3)
    for n in range(5):
        window.add((1, n))
    assert len(window) == 3
    assert (1, 0) not in window and (1, 1) not in window
    assert (1, 4) in window


def test_handled_keys_are_remembered_across_a_restart(tmp_path: Path) -> None:
    journal = tmp_path / "node.handled"
    window = DedupWindow(100, journal)
    window.add((5, 1))
    window.add((5, 2))
    window.handled((5, 1))  # 2 arrived but was not handled before the "crash"
    window.close()

    again = DedupWindow(100, journal)
    assert (5, 1) in again
    assert (5, 2) not in again
    again.close()


def test_the_journal_rotates_and_keeps_a_window(tmp_path: Path) -> None:
    journal = tmp_path / "node.handled"
    window = DedupWindow(4, journal)
    for n in range(10):
        window.add((1, n))
        window.handled((1, n))
    window.close()
    assert len(journal.read_bytes().splitlines()) < 4
    again = DedupWindow(4, journal)
    assert (1, 9) in again and (1, 6) in again
    again.close()


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    journal = tmp_path / "node.handled"
    journal.write_bytes(b"1 1\n1 2\n1")
    window = DedupWindow(10, journal)
    assert (1, 1) in window and (1, 2) in window and len(window) == 2
    window.close()
