"""Template quotas and minima through the API: ``template_gib`` is taken when an upload or an
import declares its image (rounded up to GiB) and given back when the template is deleted; a
public template counts against no tenant; a VM below its template's minimum CPUs or memory is
refused naming the field."""

from __future__ import annotations

from pathlib import Path

from cloudcore.store.records import TaskState, Template
from tests.component.gateway.conftest import ApiClient
from tests.component.gateway.test_image_import_api import Origin, origin  # noqa: F401 - fixture
from tests.component.gateway.test_images_api import (
    leftovers,
    new_template,
    put_image,
    qcow2_image,
    sha,
)

GIB = 1024**3


async def used(api: ApiClient, tenant: str = "acme") -> int:
    r = await api.call("GET", f"/tenants/{tenant}/quotas", "admin")
    assert r.status == 200, r.body
    found = [q["used"] for q in r.body["items"] if q["resource"] == "template_gib"]
    return int(found[0]) if found else -1


async def test_an_upload_takes_template_gib_and_the_delete_gives_it_back(
    api: ApiClient, tmp_path: Path
) -> None:
    r = await api.call("PUT", "/tenants/acme/quotas/template_gib", "admin", {"maximum": 1})
    assert r.status == 200, r.body
    image = qcow2_image(tmp_path).read_bytes()
    first, second = await new_template(api), await new_template(api)
    assert (await put_image(api, first, image, size=len(image), digest=sha(image))).status == 200
    assert await used(api) == 1  # a few hundred KiB, rounded up

    refused = await put_image(api, second, image, size=len(image), digest=sha(image))
    assert refused.status == 409 and refused.error_code == "quota_exceeded", refused.body
    assert "template_gib" in refused.body["error"]["message"]
    assert (await api.store.get(Template, second)).state == "NEW"  # nothing started
    assert await used(api) == 1 and leftovers(api) == []

    assert (await api.call("DELETE", f"/templates/{first}", "alice")).status == 204
    assert await used(api) == 0
    again = await put_image(api, second, image, size=len(image), digest=sha(image))
    assert again.status == 200, again.body
    assert await used(api) == 1


async def test_a_public_template_counts_against_no_tenant(api: ApiClient, tmp_path: Path) -> None:
    await api.call("PUT", "/tenants/system/quotas/template_gib", "admin", {"maximum": 0})
    image = qcow2_image(tmp_path).read_bytes()
    public = await new_template(api, "admin", tenant_id=None)
    r = await put_image(api, public, image, size=len(image), digest=sha(image), who="admin")
    assert r.status == 200, r.body
    assert await used(api, "system") == 0
    listed = await api.call("GET", "/templates", "alice")
    assert public in {t["id"] for t in listed.body["items"]}  # every tenant sees it
    assert (await api.call("DELETE", f"/templates/{public}", "alice")).status == 403


async def test_an_import_of_unknown_size_takes_the_quota_when_the_server_says_it(
    api: ApiClient,
    origin: Origin,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    await api.call("PUT", "/tenants/acme/quotas/template_gib", "admin", {"maximum": 0})
    origin.image = qcow2_image(tmp_path).read_bytes()
    tid = await new_template(api)
    r = await api.call(
        "POST", f"/templates/{tid}/import", "alice", {"url": f"{origin.base}/disk.img"}
    )
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"])
    assert task.state is TaskState.FAILED and "template_gib" in task.error
    t = await api.store.get(Template, tid)
    assert t.state == "ERROR" and leftovers(api) == []
    assert await used(api) == 0

    await api.call("PUT", "/tenants/acme/quotas/template_gib", "admin", {"maximum": 1})
    r = await api.call(
        "POST", f"/templates/{tid}/import", "alice", {"url": f"{origin.base}/disk.img"}
    )
    assert (await api.wait_task(r.body["id"])).state is TaskState.SUCCEEDED
    assert await used(api) == 1


async def test_a_vm_below_its_templates_minimum_is_refused_naming_the_field(
    api: ApiClient,
) -> None:
    tid = await new_template(api, min_cpus=2, min_memory_mib=512)
    base = {"name": "small", "datacenter_id": "dc1", "template_id": tid}
    cpus = await api.call("POST", "/vms", "alice", {**base, "cpus": 1, "memory_mib": 512})
    assert cpus.status == 422, cpus.body
    assert cpus.body["error"]["details"]["field"] == "cpus"
    assert "at least 2" in cpus.body["error"]["message"]
    memory = await api.call("POST", "/vms", "alice", {**base, "cpus": 2, "memory_mib": 256})
    assert memory.status == 422 and memory.body["error"]["details"]["field"] == "memory_mib"
    t = (await api.call("GET", f"/templates/{tid}", "alice")).body
    assert (t["min_cpus"], t["min_memory_mib"]) == (2, 512)
