"""Templates with their image (migration 8) on every store: the formats map, the upload's
progress and the checksum filter the library uses to tell whether a file is shared."""

from __future__ import annotations

from cloudcore.store import Store
from cloudcore.store.records import OutboxEvent, Template, TemplateState


async def test_a_template_keeps_its_image_fields_and_is_found_by_checksum(store: Store) -> None:
    sha = "ab" * 32
    made = await store.create(
        Template(id="tpl-a", name="a", state=TemplateState.NEW, upload_size=10, upload_sha256=sha)
    )
    assert made.state is TemplateState.NEW and made.formats == {}
    done = await store.update(
        Template,
        "tpl-a",
        expected_version=made.version,
        events=[OutboxEvent(type="template.state_changed", subject="template/tpl-a", data={})],
        state=TemplateState.AVAILABLE,
        checksum=sha,
        formats={"qcow2": sha, "vmdk": "cd" * 32},
        virtual_size=16 << 20,
        actual_size=4096,
        uploaded_bytes=10,
        error=None,
    )
    again = await store.get(Template, "tpl-a")
    assert again == done
    assert again.formats == {"qcow2": sha, "vmdk": "cd" * 32} and again.virtual_size == 16 << 20
    await store.create(Template(id="tpl-b", name="b", checksum="ef" * 32))
    found = await store.list(Template, where={"checksum": sha})
    assert [t.id for t in found.items] == ["tpl-a"]
