"""The ``template_gib`` invariant, after every step of randomized sequences on both stores: a
tenant's recorded usage is the sum of its templates' declared image sizes in GiB rounded up
(``cloudcore.store.usage.template_usage``), whatever was declared, re-declared, refused for
the quota or deleted; and ``reconcile_quotas`` finds no drift. Steps go through the same calls
the upload, the import and the delete make (``actors.template_images``)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.template_images import change_template, quota_delta
from cloudcore.errors import QuotaExceeded
from cloudcore.store.base import Store
from cloudcore.store.records import Template, TemplateState, new_id
from cloudcore.store.usage import template_usage
from tests.contract.store.factory import Factory

GIB = 1024**3
_SIZE = st.sampled_from([0, 1, GIB - 1, GIB, GIB + 1, 3 * GIB, 5 * GIB + 7])
_STEP = st.one_of(
    st.tuples(st.just("create"), st.booleans()),  # public or the tenant's
    st.tuples(st.just("declare"), st.integers(0, 20), _SIZE),
    st.tuples(st.just("delete"), st.integers(0, 20)),
)
MAXIMUM = 8


class _Run:
    def __init__(self, store: Store, tenant_id: str) -> None:
        self.store, self.tenant_id = store, tenant_id
        self.ids: list[str] = []
        self.refused = 0

    async def step(self, step: tuple[Any, ...]) -> None:
        if step[0] == "create":
            owner = None if step[1] else self.tenant_id
            made = await self.store.create(
                Template(id=new_id("tpl-"), tenant_id=owner, name="t", state=TemplateState.NEW)
            )
            self.ids.append(made.id)
            return
        if not self.ids:
            return
        template_id = self.ids[step[1] % len(self.ids)]
        template = await self.store.get(Template, template_id)
        if step[0] == "declare":
            try:
                await change_template(self.store, template, upload_size=step[2])
            except QuotaExceeded:
                self.refused += 1
                assert (await self.store.get(Template, template_id)) == template  # unchanged
            return
        await self.store.delete_charged(
            Template,
            template.id,
            expected_version=template.version,
            tenant_id=template.tenant_id,
            delta=quota_delta(template, 0),
        )
        self.ids.remove(template_id)

    async def check(self) -> None:
        held = 0
        for template_id in self.ids:
            t = await self.store.get(Template, template_id)
            if t.tenant_id == self.tenant_id:
                held += template_usage(t.upload_size)["template_gib"]
        quotas = {q.resource: q for q in await self.store.get_quotas(self.tenant_id)}
        assert quotas["template_gib"].used == held
        assert held <= MAXIMUM
        assert await self.store.reconcile_quotas(self.tenant_id, fix=False) == []


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(_STEP, min_size=1, max_size=25))
async def test_template_gib_used_is_the_sum_of_the_declared_images(
    store: Store, make: Factory, steps: list[tuple[Any, ...]]
) -> None:
    tenant = await make.tenant()
    await store.set_quota(tenant.id, "template_gib", MAXIMUM)
    run = _Run(store, tenant.id)
    for step in steps:
        await run.step(step)
        await run.check()
