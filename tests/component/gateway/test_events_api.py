"""Events through the HTTP API: a page of history, and the live SSE stream that resumes."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from tests.component.gateway.conftest import ApiClient
from tests.component.gateway.test_vms_api import running_vm
from tests.waiting import eventually


async def read_sse(
    api: ApiClient, query: str, who: str, count: int, last_event_id: str | None = None
) -> list[dict[str, Any]]:
    """The first ``count`` events of the stream, each with its SSE ``id`` and ``event``."""
    headers = {"Authorization": f"Bearer {api.tokens[who]}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=20)
    async with api.session.get(
        f"{api.base}/events/stream?{query}", headers=headers, timeout=timeout
    ) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
        frame: dict[str, str] = {}
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if "data" in frame:
                    event = msgspec.json.decode(frame["data"])
                    events.append({"sse_id": frame["id"], "sse_event": frame["event"], **event})
                    if len(events) == count:
                        return events
                frame = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                frame[key] = value
    raise AssertionError(f"the stream ended after {len(events)} events")


async def test_list_pages_through_the_history_filtered(api: ApiClient) -> None:
    vm_id = await running_vm(api)
    r = await api.call("GET", f"/events?types=vm.state_changed&subject=vm/{vm_id}", "alice")
    assert r.status == 200
    states = [e["data"]["state"] for e in r.body["items"]]
    assert states[0] == "RUNNING" and "PROVISIONING" in states  # the newest first
    first = await api.call("GET", "/events?limit=2", "admin")
    assert len(first.body["items"]) == 2 and first.body["next_cursor"]
    rest = await api.call("GET", f"/events?cursor={first.body['next_cursor']}", "admin")
    positions = [e["position"] for e in first.body["items"] + rest.body["items"]]
    assert positions == sorted(set(positions), reverse=True)
    everything = await api.call("GET", "/events?limit=1000&sort=position:asc", "admin")
    oldest = [e["position"] for e in everything.body["items"]]
    assert oldest == sorted(set(oldest)) and set(positions) <= set(oldest)


async def test_the_oldest_first_pages_on_and_the_bounds_cut_either_way(api: ApiClient) -> None:
    vm_id = await running_vm(api)
    query = f"types=vm.state_changed&subject=vm/{vm_id}"
    whole = (await api.call("GET", f"/events?{query}&sort=time:asc", "alice")).body["items"]
    assert len(whole) >= 3, whole
    first = await api.call("GET", f"/events?{query}&sort=time:asc&limit=1", "alice")
    cursor = first.body["next_cursor"]
    rest = await api.call("GET", f"/events?{query}&sort=time:asc&cursor={cursor}", "alice")
    assert first.body["items"] + rest.body["items"] == whole
    assert rest.body["next_cursor"] is None
    low, high = whole[0]["position"], whole[-1]["position"]
    for sort in ("position:asc", "position:desc"):
        inside = await api.call("GET", f"/events?{query}&sort={sort}&after={low}&before={high}")
        expected = whole[1:-1] if sort.endswith("asc") else whole[1:-1][::-1]
        assert inside.body["items"] == expected, sort
    bad = await api.call("GET", "/events?sort=type", "alice")
    assert bad.status == 422 and "sort" in bad.body["error"]["message"]


async def test_filters_apply_before_the_limit_newest_first(api: ApiClient) -> None:
    tasks = []
    for name in ("first", "second"):
        body = {"name": name, "datacenter_id": "dc1", "cpus": 1, "memory_mib": 128}
        r = await api.call("POST", "/vms", "alice", body)
        tasks.append(r.body["id"])
        await api.wait_task(r.body["id"])
    expected = [f"task/{tasks[1]}", f"task/{tasks[0]}"]

    async def page() -> Any:
        found = await api.call("GET", "/events?types=task.finished&limit=2", "alice")
        return found if [e["subject"] for e in found.body["items"]] == expected else None

    found = await eventually(page)  # the outbox relays the events after the tasks end
    assert [e["type"] for e in found.body["items"]] == ["task.finished"] * 2
    everything = await api.call("GET", "/events?limit=1000", "alice")
    assert len(everything.body["items"]) > 2  # other events lie between: filtered first


async def test_a_user_sees_only_its_tenants_events(api: ApiClient) -> None:
    await running_vm(api, "alice")
    mine = await api.call("GET", "/events?limit=1000", "alice")
    theirs = await api.call("GET", "/events?limit=1000", "bob")
    assert mine.body["items"] and all(e["tenant"] == "acme" for e in mine.body["items"])
    assert theirs.body["items"] == []


async def test_the_stream_replays_after_a_position_and_resumes_from_last_event_id(
    api: ApiClient,
) -> None:
    vm_id = await running_vm(api)
    first_two = await read_sse(api, f"after=0&subject=vm/{vm_id}", "alice", 2)
    assert [e["sse_event"] for e in first_two] == ["vm.state_changed"] * 2
    assert first_two[0]["sse_id"] == first_two[0]["position"]
    resumed = await read_sse(api, f"subject=vm/{vm_id}", "alice", 1, first_two[0]["sse_id"])
    assert resumed[0]["position"] == first_two[1]["position"]  # no gap, no duplicate


async def test_the_stream_delivers_task_progress_live(api: ApiClient) -> None:
    r = await api.call(
        "POST", "/vms", "alice", {"name": "a", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 128}
    )
    task_id = r.body["id"]
    events = await read_sse(api, f"after=0&subject=task/{task_id}", "alice", 7)
    assert [e["type"] for e in events] == ["task.step"] * 6 + ["task.finished"]
    progress = [e["data"]["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert [e["data"]["step"] for e in events[:6:2]] == ["schedule", "define", "start"]


async def test_a_malformed_position_is_422_before_the_stream_starts(api: ApiClient) -> None:
    r = await api.call("GET", "/events/stream?after=yesterday", "alice")
    assert r.status == 422 and "yesterday" in r.body["error"]["message"]
    r = await api.call("GET", "/events?after=yesterday", "alice")
    assert r.status == 422
