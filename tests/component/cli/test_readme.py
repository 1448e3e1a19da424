"""The README's command-line examples print what the README shows: each command of its "Try it"
block runs against a real ``cloudcore serve`` (see conftest), and its output (stdout, then
stderr, as a terminal shows a pipe's) is compared with the lines that follow it in the README.

Ids, task ids and event positions are compared by shape, since every run makes new ones; a VM id
the README names is bound to the real one where the two first meet, so later commands use it;
``...`` stands for any lines (the steps a progress bar catches running depend on timing)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from tests.component.cli.conftest import Node

README = Path(__file__).resolve().parents[3] / "README.md"
_PREFIX = ".venv/bin/cloudcore "

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SHAPES = (
    (_UUID, "<uuid>"),
    (re.compile(r"task-[0-9a-f]{28}"), "<task>"),
    (re.compile(r"\b\d{16}-\d{10}\b"), "<position>"),
    (re.compile(r"\bdc1-h\d\b"), "<host>"),  # where the scheduler puts it
)


def _try_it() -> list[tuple[str, list[str]]]:
    """(command, the lines shown after it) for each cloudcore command of the "Try it" block."""
    text = README.read_text(encoding="utf-8")
    block = text.split("### Try it", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    examples: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith(_PREFIX):
            examples.append((line.removeprefix(_PREFIX).split("  #")[0].strip(), []))
        elif examples:
            examples[-1][1].append(line)
    return examples


def _shape(line: str) -> str:
    for pattern, placeholder in _SHAPES:
        line = pattern.sub(placeholder, line)
    return " ".join(line.split())


def _matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line, by shape; ``...`` takes any number of lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(_matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return (
        bool(actual)
        and _shape(expected[0]) == _shape(actual[0])
        and _matches(expected[1:], actual[1:])
    )


def test_the_readme_shows_cloudcore_commands() -> None:
    commands = [command.split()[:2] for command, _ in _try_it()]
    assert ["vm", "create"] in commands and ["events", "--subject"] in commands


_EXAMPLES = [(c, shown) for c, shown in _try_it() if c != "console"]  # console: its own tests


@pytest.fixture(scope="module")
def bound() -> dict[str, str]:
    """README id -> the id this run made, filled as the commands run, in the README's order."""
    return {}


@pytest.mark.parametrize(
    ("command", "shown"), _EXAMPLES, ids=[c.split(" -")[0] for c, _ in _EXAMPLES]
)
def test_a_try_it_command_prints_what_the_readme_shows(
    node: Node, bound: dict[str, str], command: str, shown: list[str]
) -> None:
    for readme_id, real_id in bound.items():
        command = command.replace(readme_id, real_id)
    result = node.cli(*command.split())
    assert result.returncode == 0, (command, result.stderr)
    printed = (result.stdout + result.stderr).splitlines()
    assert _matches(shown, printed), (
        f"{command}\nREADME:\n" + "\n".join(shown) + "\nprinted:\n" + "\n".join(printed)
    )
    for line in shown:
        for readme_id in _UUID.findall(line):
            found = [_UUID.findall(p) for p in printed if _shape(p) == _shape(line)]
            if found and found[0]:
                bound.setdefault(readme_id, found[0][0])
    assert bound, "no VM id of the README was bound to a real one"


def test_the_readme_shows_the_event_stream_id_as_served(node: Node) -> None:
    text = README.read_text(encoding="utf-8")
    readme_id = re.search(r"# id: (\S+)  event:", text)
    assert readme_id is not None
    shape = re.sub(r"\d+", lambda m: rf"\d{{{len(m.group())}}}", readme_id.group(1))
    request = urllib.request.Request(
        f"{node.url}/events/stream?after=0",
        headers={"Authorization": f"Bearer {node.token}", "Accept": "text/event-stream"},
    )
    with urllib.request.urlopen(request, timeout=10) as stream:
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                assert re.fullmatch(shape, line.removeprefix("id: ")), line
                break
        else:
            pytest.fail("the stream sent no event")
