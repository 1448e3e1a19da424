"""The interactive shell: one command per line, against a node's HTTP API.

Built on :class:`cmd.Cmd` with readline: history kept across sessions, Tab completes command
names and actor paths (read from the node's actor tree). An error prints the API's message and
the session goes on; no traceback reaches the operator. Ctrl-C abandons the command in hand (or
stops ``events --follow``) and gives the prompt back; Ctrl-D or ``quit`` leaves.
"""

from __future__ import annotations

import cmd
import collections
import json
import shlex
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from cloudcore.app.client import ApiFailure, BlockingClient
from cloudcore.app.console import _render
from cloudcore.errors import InvalidRequest, describe

__all__ = ["Console"]

_LATEST = 5  # VMs shown by ``vms``
_EVENTS = 20  # events shown by ``events`` without --follow
_PAGE = 500


class Console(cmd.Cmd):
    """The operator console. ``client`` talks to the API; output goes to ``stdout``."""

    intro = 'cloudcore console. Type "help" for the commands, Tab to complete, "quit" to leave.'
    prompt = "cloudcore> "
    doc_header = "Commands (help <command> for more):"

    def __init__(self, client: BlockingClient, stdout: TextIO | None = None) -> None:
        super().__init__(stdout=stdout)
        self.client = client

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Read commands until quit or end of input; Ctrl-C only abandons the line."""
        intro: str | None = self.intro
        while True:
            try:
                self.cmdloop(intro)
                return
            except KeyboardInterrupt:
                self._say("^C")
                intro = ""

    def onecmd(self, line: str) -> bool:
        try:
            return super().onecmd(line)
        except ApiFailure as exc:
            self._say(f"error: {_render.failure(exc)}")
        except InvalidRequest as exc:  # a usage mistake, said by the command
            self._say(f"error: {exc}")
        except Exception as exc:  # the session outlives any one command
            self._say(f"error: {describe(exc)}")
        return False

    def emptyline(self) -> bool:
        return False  # not cmd's default: repeat the last command

    def default(self, line: str) -> None:
        name = line.split()[0]
        close = [c for c in self.completenames(name[:2]) if c != "EOF"]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        self._say(f'error: unknown command "{name}"{hint}; "help" lists them')

    def _say(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    # ------------------------------------------------------------------ the node

    def do_nodes(self, arg: str) -> None:
        """nodes: the cluster's nodes (* marks the one answering): status, profile, the
        datacenters each runs, its load (CPU % of a core, tasks driven) and age."""
        nodes = self.client.get("/system/nodes")["items"]
        now = datetime.now(UTC)
        rows = [
            [
                ("* " if n["this"] else "  ") + n["id"],
                n["status"],
                n["transport"],
                n.get("info", {}).get("profile") or "-",
                n.get("info", {}).get("datacenters") or "-",
                _load(n.get("info", {})),
                _age(n.get("started_at"), now),
                ",".join(f"{k}={v}" for k, v in sorted(n["capabilities"].items())) or "-",
                n.get("last_heartbeat") or "-",
            ]
            for n in nodes
        ]
        header = ["  node", "status", "transport", "profile", "datacenters", "load", "age"]
        self._say(_render.table([*header, "capabilities", "heartbeat"], rows))

    def do_tree(self, arg: str) -> None:
        """tree [path] [@node]: the actors under path (default /user), with status, mailbox
        depth, messages processed and restarts; of every up node of the cluster in turn, or
        of the one named after @."""
        words = arg.split()
        node = next((w[1:] for w in words if w.startswith("@")), None)
        rest = " ".join(w for w in words if not w.startswith("@"))
        path = _actor_path(rest) if rest.strip() else "/user"
        if node is not None:
            self._say(_render.tree(self.client.get("/system/tree", {"path": path, "node": node})))
            return
        nodes = [n for n in self.client.get("/system/nodes")["items"] if n["status"] == "up"]
        if len(nodes) <= 1:
            self._say(_render.tree(self.client.get("/system/tree", {"path": path})))
            return
        for n in nodes:
            try:
                tree = self.client.get("/system/tree", {"path": path, "node": n["id"]})
            except ApiFailure as exc:
                self._say(f"== {n['id']}: {exc}")
                continue
            self._say(f"== {n['id']}")
            self._say(_render.tree(tree))

    def do_inspect(self, arg: str) -> None:
        """inspect <actor> [@node]: one actor: class, status, mailbox, processed, restarts,
        children; on the node named after @, or else on the node answering and, if it has no
        such actor, on the first other up node of the cluster that has."""
        words = arg.split()
        node = next((w[1:] for w in words if w.startswith("@")), None)
        path = _actor_path(_one(" ".join(w for w in words if not w.startswith("@")), _INSPECT))
        if node is not None:
            self._say(
                _render.actor(self.client.get("/system/actors", {"path": path, "node": node}))
            )
            return
        try:
            self._say(_render.actor(self.client.get("/system/actors", {"path": path})))
            return
        except ApiFailure as exc:
            if exc.status != 404:
                raise
            missing = exc
        for n in self.client.get("/system/nodes")["items"]:
            if n["status"] != "up" or n.get("this"):
                continue
            try:
                info = self.client.get("/system/actors", {"path": path, "node": n["id"]})
            except ApiFailure as exc:
                if exc.status != 404:
                    raise
                continue
            self._say(_render.actor(info))
            return
        raise missing

    def do_tell(self, arg: str) -> None:
        """tell <actor> <message>: send a message, don't wait. The message is JSON with its
        type, {"type": "GetHost"}, or just the type's name for one without fields."""
        path, message = _path_and_message(arg, "tell")
        told = self.client.post("/system/tell", {"path": path, "message": message})
        self._say(f"sent {told['message_type']} to {told['path']}")

    def do_ask(self, arg: str) -> None:
        """ask <actor> <message>: send a message and print the reply (JSON, as for tell)."""
        path, message = _path_and_message(arg, "ask")
        reply = self.client.post("/system/ask", {"path": path, "message": message})
        self._say(f"{reply['reply_type']} from {reply['path']}:")
        self._say(json.dumps(reply["reply"], indent=2, sort_keys=True))

    def do_restart(self, arg: str) -> None:
        """restart <actor>: a fresh instance of the actor (under /user); its children too."""
        path = _actor_path(_one(arg, "restart <actor>"))
        info = self.client.post("/system/restart", {"path": path})
        self._say(f"restarted {info['path']} ({info['status']}, restarts: {info['restarts']})")

    def do_stop(self, arg: str) -> None:
        """stop <actor>: stop the actor (under /user) and its children."""
        path = _actor_path(_one(arg, "stop <actor>"))
        done = self.client.post("/system/stop", {"path": path})
        self._say(f"{done['path']} is {done['status']}")

    def do_deadletters(self, arg: str) -> None:
        """deadletters: the latest messages that reached no actor, and why."""
        letters = self.client.get("/system/deadletters", {"limit": 50})
        rows = [
            [d["time"], d["recipient"], d["message_type"], d["reason"]] for d in letters["items"]
        ]
        if rows:
            self._say(_render.table(["time", "recipient", "type", "reason"], rows))
        self._say(f"{letters['total']} dead letter(s) since the node started")

    # ------------------------------------------------------------------ the cloud

    def do_events(self, arg: str) -> None:
        """events [--follow]: the latest events; with --follow, new ones as they happen
        (Ctrl-C stops following)."""
        words = shlex.split(arg)
        if any(w not in ("--follow", "-f") for w in words):
            raise InvalidRequest("usage: events [--follow]")
        if not words:
            latest = self.client.get("/events", {"limit": _EVENTS})["items"][::-1]
            for event in latest:
                self._say(_render.event_line(event))
            self._say(f"{len(latest)} latest event(s)")
            return
        with self.client.stream("/events/stream") as events:
            try:
                self._say("following events; Ctrl-C stops")
                for sse in events:
                    event = sse.json()
                    if isinstance(event, dict):
                        self._say(_render.event_line(event))
            except KeyboardInterrupt:
                self._say("stopped following")

    def do_vms(self, arg: str) -> None:
        """vms: how many VMs in each state, and the latest few."""
        vms = list(self._pages("/vms"))
        counts = collections.Counter(vm["state"] for vm in vms)
        by_state = ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))
        self._say(f"{len(vms)} VM(s)" + (f": {by_state}" if by_state else ""))
        if vms:
            rows = [
                [
                    v["id"],
                    v["name"],
                    v["state"],
                    v.get("host_id") or "-",
                    v["spec"]["cpus"],
                    v["spec"]["memory_mib"],
                ]
                for v in vms[-_LATEST:]
            ]
            self._say(_render.table(["id", "name", "state", "host", "cpus", "memory_mib"], rows))

    def do_hosts(self, arg: str) -> None:
        """hosts: every host with its health, admin state, and CPUs and memory used/total."""
        try:
            hosts = list(self._pages("/hosts"))
        except ApiFailure as exc:
            if exc.status == 404:
                raise ApiFailure(
                    "this node does not serve the hosts API (/hosts: 404)", status=404
                ) from None
            raise
        rows = [
            [
                h["id"],
                h["datacenter_id"],
                h["health"],
                h["admin_state"],
                f"{h['cpus_used']}/{h['cpus']}",
                f"{h['memory_mib_used']}/{h['memory_mib']}",
            ]
            for h in hosts
        ]
        self._say(
            _render.table(["host", "datacenter", "health", "admin", "cpus", "memory_mib"], rows)
        )

    def _pages(self, path: str) -> Iterator[Any]:
        """Every item of a paged listing, following ``next_cursor``."""
        cursor: str | None = None
        while True:
            page = self.client.get(path, {"limit": _PAGE, "cursor": cursor})
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # ------------------------------------------------------------------ leaving

    def do_quit(self, arg: str) -> bool:
        """quit: leave the console (also exit, or Ctrl-D)."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:  # the name cmd.Cmd gives the end of input
        self._say("")
        return True

    # ------------------------------------------------------------------ completion

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return [n for n in super().completenames(text, *ignored) if n != "EOF"]

    def complete_tree(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_path(text, line, begidx)

    complete_inspect = complete_tell = complete_ask = complete_tree
    complete_restart = complete_stop = complete_tree

    def complete_events(self, text: str, *ignored: Any) -> list[str]:
        return [o for o in ("--follow",) if o.startswith(text)]

    def _complete_path(self, text: str, line: str, begidx: int) -> list[str]:
        if len(line[:begidx].split()) > 1:
            return []  # only the first argument is an actor
        try:
            root = self.client.get("/system/tree", {"path": "/"})
        except ApiFailure:
            return []
        paths = [info["path"] for info in _walk(root)]
        if text.startswith("/"):
            return [p for p in paths if p.startswith(text)]
        relative = [p.removeprefix("/user/") for p in paths if p.startswith("/user/")]
        return [p for p in relative if p.startswith(text)]


def _walk(info: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield info
    for child in info.get("children", ()):
        yield from _walk(child)


def _load(info: Mapping[str, str]) -> str:
    """A node's load as it reports it: CPU % of one core, tasks its actors drive."""
    if "cpu_percent" not in info:
        return "-"
    return f"{info['cpu_percent']}% cpu, {info.get('tasks', '0')} tasks"


def _age(started_at: str | None, now: datetime) -> str:
    """How long a node has run: 45s, 12m, 3h, 2d."""
    if not started_at:
        return "-"
    seconds = max(0, int((now - datetime.fromisoformat(started_at)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_INSPECT = "inspect <actor> [@node]"


def _actor_path(word: str) -> str:
    """An absolute path as given; a relative one is under /user (``dc/dc1``)."""
    word = word.strip()
    return word if word.startswith("/") else "/user/" + word


def _one(arg: str, usage: str) -> str:
    words = arg.split()
    if len(words) != 1:
        raise InvalidRequest(f"usage: {usage}")
    return words[0]


def _path_and_message(arg: str, verb: str) -> tuple[str, dict[str, Any]]:
    usage = f'usage: {verb} <actor> <message>, the message as {{"type": "GetHost", ...}}'
    parts = arg.strip().split(None, 1)
    if len(parts) != 2:
        raise InvalidRequest(usage)
    path, text = parts
    text = text.strip()
    if text.isidentifier():
        return _actor_path(path), {"type": text}
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"the message is not JSON: {exc}; {usage}") from None
    if not isinstance(message, dict):
        raise InvalidRequest(f"the message must be a JSON object; {usage}")
    return _actor_path(path), message
