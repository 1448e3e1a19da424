"""A small PowerShell interpreter: enough of the language for the scripts the Hyper-V driver sends.

A script is the driver's frame (preferences, ``try {``, the arguments decoded from base64 JSON
into ``$a``, the body, ``} catch {`` writing the error record as JSON to stderr, ``exit 1``) or a
bare body. Body lines are ``$var = <pipeline>`` or ``<pipeline>``; a pipeline is commands joined
by ``|``; a command is a cmdlet name and ``-Param value`` / ``-Switch`` arguments whose values are
``'quoted'`` strings, numbers, ``$true``/``$false``, ``$var`` or ``$a.field[0].field`` paths, and
comma lists. Anything else is a parse error, as PowerShell would report one. ``Write-Error``
writes an error record, so pywinrm's recorded ``Write-Error "Error"`` exchange replays.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_ARGS = re.compile(
    r"^\$a = \[Text\.Encoding\]::UTF8\.GetString\("
    r"\[Convert\]::FromBase64String\('([A-Za-z0-9+/=]*)'\)\)"
    r" \| ConvertFrom-Json$"
)
_PREFERENCES = {
    "$ErrorActionPreference = 'Stop'",
    "$ProgressPreference = 'SilentlyContinue'",
}
_CATCH = (
    "[Console]::Error.WriteLine((@{ FullyQualifiedErrorId = $_.FullyQualifiedErrorId; "
    "Category = [string]$_.CategoryInfo.Category; Message = $_.Exception.Message } "
    "| ConvertTo-Json -Compress))"
)
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<dq>\"[^\"$`]*\")|(?P<pipe>\|)|(?P<comma>,)"
    r"|(?P<word>[^\s|,']+))"
)
_FROM_BASE64 = re.compile(r"\[Convert\]::FromBase64String\((\$[\w.\[\]]+)\)")
SWITCHES = {
    "Force",
    "TurnOff",
    "NoVHD",
    "AsJob",
    "Compress",
    "Passthru",
    "Confirm:$false",
    "EQ",
    "In",
}


class PSError(Exception):
    """A terminating PowerShell error record."""

    def __init__(
        self, fqid: str, category: str, message: str, exception: str = "RuntimeException"
    ) -> None:
        super().__init__(message)
        self.fqid, self.category, self.message = fqid, category, message
        self.exception = exception
        self.line = ""  # the script line that failed, set by the interpreter
        self.cmdlet = ""


@dataclass
class Command:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


Cmdlet = Callable[[list[Any], dict[str, Any]], list[Any]]


@dataclass
class Result:
    stdout: bytes
    stderr: bytes
    exit_code: int


_WIDTH = 78  # powershell.exe wraps its console error view at this many characters


def _wrapped(text: str) -> list[str]:
    chunks = []
    while len(text) > _WIDTH:
        chunks.append(text[:_WIDTH] + " ")
        text = "   " + text[_WIDTH:]
    return [*chunks, text]


def clixml_error(error: PSError) -> bytes:
    """An error record as powershell.exe writes it to stderr over WinRM: CLIXML holding the
    console's error view (message, CategoryInfo, FullyQualifiedErrorId), wrapped as it wraps."""
    lines = [
        f"{error.line} : {error.message}",
        f"    + CategoryInfo          : {error.category}: (:) [{error.cmdlet}], {error.exception}",
        f"    + FullyQualifiedErrorId : {error.fqid}",
        " ",
    ]
    chunks = [chunk for line in lines for chunk in _wrapped(line)]
    body = "".join(f'<S S="Error">{chunk}_x000D__x000A_</S>' for chunk in chunks)
    return (
        "#< CLIXML\r\n"
        f'<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">{body}'
        "</Objs>"
    ).encode()


class Interpreter:
    """Runs scripts against a table of cmdlets (name -> function of pipeline input and
    parameters, returning output objects)."""

    def __init__(self, cmdlets: dict[str, Cmdlet]) -> None:
        self.cmdlets = cmdlets

    def run(self, script: str) -> Result:
        lines = [line.strip() for line in script.strip().splitlines() if line.strip()]
        framed = "try {" in lines
        try:
            body, args = self._unframe(lines) if framed else (lines, None)
            output = self._body(body, {"a": args})
        except PSError as exc:
            if not framed:
                return Result(b"", clixml_error(exc), 1)
            record = {
                "FullyQualifiedErrorId": exc.fqid,
                "Category": exc.category,
                "Message": exc.message,
            }
            return Result(b"", (json.dumps(record) + "\r\n").encode(), 1)
        text = "".join(o if isinstance(o, str) else json.dumps(o) for o in output)
        return Result(text.encode(), b"", 0)

    @staticmethod
    def _unframe(lines: list[str]) -> tuple[list[str], Any]:
        start, catch = (
            lines.index("try {"),
            lines.index("} catch {") if "} catch {" in lines else -1,
        )
        if catch < 0 or lines[catch + 1 :] != [_CATCH, "exit 1", "}"]:
            raise PSError("ParseError", "ParserError", "unexpected catch block")
        if any(line not in _PREFERENCES for line in lines[:start]):
            raise PSError("ParseError", "ParserError", "unexpected statement before try")
        body = lines[start + 1 : catch]
        args = None
        if body and (match := _ARGS.match(body[0])):
            args = json.loads(base64.b64decode(match.group(1)).decode("utf-8") or "null")
            body = body[1:]
        return body, args

    def _body(self, lines: list[str], variables: dict[str, Any]) -> list[Any]:
        output: list[Any] = []
        for line in lines:
            target = None
            if m := re.match(r"^\$(\w+) = (.*)$", line):
                target, line = m.group(1), m.group(2)
            # The one .NET call the driver makes: base64 to bytes (its image copies).
            if target and (call := _FROM_BASE64.fullmatch(line)):
                variables[target] = base64.b64decode(self._value(call.group(1), variables))
                continue
            try:
                result = self._pipeline(self._parse(line, variables))
            except PSError as exc:
                exc.line = exc.line or line
                raise
            if target is not None:
                variables[target] = result[0] if len(result) == 1 else result
            else:
                output.extend(result)
        return output

    def _parse(self, line: str, variables: dict[str, Any]) -> list[Command]:
        tokens = [(m.lastgroup, m.group(m.lastgroup or "")) for m in _TOKEN.finditer(line)]
        commands: list[Command] = []
        current: Command | None = None
        pending: str | None = None
        values: list[Any] = []
        for kind, text in [*tokens, ("pipe", "|")]:
            if kind == "pipe" or (kind == "word" and text.startswith("-") and current):
                if pending is not None and current is not None:
                    current.params[pending] = values if len(values) != 1 else values[0]
                    pending, values = None, []
                if kind == "pipe":
                    if current is None:
                        raise PSError("EmptyPipeElement", "ParserError", "An empty pipe element")
                    commands.append(current)
                    current = None
                    continue
            if current is None:
                if kind == "word" and text.startswith("$"):
                    current = Command("<value>", {"value": self._value(text, variables)})
                else:
                    current = Command(text)
                continue
            if kind == "word" and text.startswith("-"):
                name = text[1:]
                if name in SWITCHES:
                    current.params[name.partition(":")[0]] = True
                else:
                    pending = name
            elif kind != "comma":
                if pending is None:  # positional
                    current.params.setdefault("", []).append(self._value(text, variables))
                else:
                    values.append(self._value(text, variables))
        return commands

    @staticmethod
    def _value(text: str, variables: dict[str, Any]) -> Any:
        if text.startswith("'"):
            return text[1:-1].replace("''", "'")
        if text.startswith('"'):
            return text[1:-1]
        if text in ("$true", "$false"):
            return text == "$true"
        if text.startswith("$"):
            path = re.findall(r"\.(\w+)|\[(\d+)\]", text[text.find(".") :] if "." in text else "")
            name = re.match(r"\$(\w+)", text)
            value = variables.get(name.group(1) if name else "")
            for key, index in path:
                value = value[int(index)] if index else (value or {}).get(key)
            return value
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        return text  # a bare word, as PowerShell passes it

    def _pipeline(self, commands: list[Command]) -> list[Any]:
        items: list[Any] = []
        for command in commands:
            if command.name == "<value>":
                value = command.params["value"]
                items = value if isinstance(value, list) else [value]
                continue
            cmdlet = self.cmdlets.get(command.name)
            if cmdlet is None:
                raise PSError(
                    "CommandNotFoundException",
                    "ObjectNotFound",
                    f"The term '{command.name}' is not recognized as the name of a cmdlet",
                )
            try:
                items = cmdlet(items, command.params)
            except PSError as exc:
                exc.cmdlet = exc.cmdlet or command.name
                raise
        return items
