"""The Volume actor: one per volume, a child of its pool's actor, started on its first message
from its record (a virtual actor) and stopped once the volume is deleted.

It owns the volume's record; only ``receive`` writes it, so the mailbox orders every change. One
operation at a time: the state machine (:mod:`actors.volume_lifecycle`) refuses any other while
the volume shows a transient state, naming the state and what is allowed. Every operation is a
journaled task whose steps (:mod:`actors.volume_work`) run in a background task with deadlines
and report back through the mailbox. A task a crash cut short is run again when the actor
starts (each step is idempotent). Quota and pool room move with the record: an extend takes its
growth when asked and gives it back if it fails; a delete gives the whole volume back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, assert_never

import msgspec

from actors.journal import FINAL, Journal
from actors.messages import RecoverVerb
from actors.services import Services
from actors.volume_lifecycle import STABLE, TRANSITIONS, VolumeOperation, transition
from actors.volume_messages import (
    AttachParams,
    DeleteSnapshotParams,
    DeleteVolumeParams,
    ExtendParams,
    GetVolume,
    RecoverVolume,
    Release,
    RequestVolumeOperation,
    Reserve,
    SnapshotVolumeParams,
    VolumeParams,
)
from actors.volume_refusals import check_request
from actors.volume_work import MIB_PER_GIB, Work, run
from actors.watchdog import Resume
from cloudcore.errors import IllegalTransition, NotFound, VersionConflict, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message
from cloudcore.store.records import (
    OutboxEvent,
    Record,
    Task,
    TaskState,
    Volume,
    VolumeSnapshot,
    VolumeSnapshotState,
    VolumeState,
)
from cloudcore.store.usage import volume_usage
from storage_drivers.base import StorageDriver

__all__ = ["VolumeActor", "VolumeMessage", "task_data", "task_params"]

_log = get_logger("actors.volume")
S = VolumeState


class _VolumeFinish(Message, frozen=True, kw_only=True):
    """From the actor's own background work: the operation ended (``error`` None: it did).
    Told only by the actor to itself: ``journal`` is the live Journal."""

    source: VolumeState
    journal: Journal
    params: VolumeParams
    changes: dict[str, Any]
    error: str | None


VolumeMessage = GetVolume | RequestVolumeOperation | RecoverVolume | Resume | _VolumeFinish


def task_params(task: Task) -> VolumeParams:
    """The parameters a volume task was started with (kept in its data)."""
    params: VolumeParams = msgspec.convert(task.data["params"], VolumeParams)
    return params


class VolumeActor(Actor[VolumeMessage]):
    def __init__(
        self,
        services: Services,
        volume: Volume,
        driver: StorageDriver,
        pool: ActorRef[Any],
        initiator_of: Callable[[str], str],
    ) -> None:
        self.services = services
        self.volume = volume
        self.driver = driver
        self.pool = pool
        self.initiator_of = initiator_of
        self.work: asyncio.Task[None] | None = None

    async def started(self) -> None:
        """A restart (after a failure of the actor's own) resumes the task the volume holds;
        a first start does not: a create's request drives its task, and after a node's crash
        the pool resumes what the store shows unsettled (``Resume``)."""
        if not self.context.restarts:
            return
        self.volume = await self.services.store.get(Volume, self.volume.id)  # the truth
        task_id = self.volume.task_id
        if task_id is not None and self.volume.state not in STABLE:
            await self._resume(task_id)

    async def stopping(self) -> None:
        if self.work is not None:
            self.work.cancel()

    async def receive(self, message: VolumeMessage) -> Any:
        match message:
            case GetVolume():
                return self.volume
            case RequestVolumeOperation(params=params, task=task):
                return await self._request(params, task)
            case RecoverVolume(verb=verb):
                return await self._recover(verb)
            case Resume(task_id=task_id):
                await self._revive(task_id)
                return None
            case _VolumeFinish():
                await self._finish(message)
                return None
            case _:
                assert_never(message)

    # ----------------------------------------------------------------- operations

    async def _request(self, params: VolumeParams, task: Task | None) -> Task:
        if task is not None and task.id == self.volume.task_id and task.id in self.services.runners:
            return task  # a create's task, written with its volume, resumed when the actor started
        if self.work is not None and not self.work.done():
            raise IllegalTransition(
                f"cannot {params.operation} volume {self.volume.id}: it is {self.volume.state} "
                "with an operation running; allowed now: none until the current one finishes"
            )
        t = transition(params.operation, self.volume.state, self.volume.id)
        await check_request(self.services.store, self.volume, params)
        source = self.volume.state
        reserved = await self._reserve(params)
        try:
            begun = await self._begin(params, t.transient, task)
        except BaseException as exc:
            if reserved:
                self.pool.tell(Release(size_mib=reserved))
            if task is not None and self.volume.task_id != task.id:  # written, never driven
                await self._refused(task, exc)
            raise
        self._start(source, params, begun)
        return begun

    async def _refused(self, task: Task, cause: BaseException) -> None:
        """End a create's task, written with its volume, whose operation was refused before it
        started (a task the actor begins is written with the volume's change, or not at all)."""
        try:
            journal = Journal(self.services.store, task, self.services.waiters)
            await journal.finish(TaskState.FAILED, f"refused: {describe(cause)}")
        except Exception as exc:
            _log.error("volume.task_not_ended", task_id=task.id, error=describe(exc))

    async def _reserve(self, params: VolumeParams) -> int:
        """Promise the pool room the operation will take; the MiB promised."""
        size = 0
        if isinstance(params, ExtendParams):
            size = (params.size_gib - self.volume.size_gib) * MIB_PER_GIB
        elif isinstance(params, SnapshotVolumeParams):
            size = self.volume.size_gib * MIB_PER_GIB
        if size > 0:
            await self.pool.ask(Reserve(size_mib=size))
        return size

    async def _begin(
        self, params: VolumeParams, transient: VolumeState, given: Task | None
    ) -> Task:
        """Write the transient state, the task (new, unless ``given``: a create's, written with
        its volume) and what the operation takes with it (quota, a snapshot's record) in ONE
        transaction, so no crash leaves a task RUNNING beside a volume at rest; the task."""
        volume = self.volume
        if given is not None and volume.state is transient and volume.task_id == given.id:
            return given
        task = given or Journal.new_task(
            kind=f"volume.{params.operation}",
            subject=f"volume/{volume.id}",
            tenant_id=volume.tenant_id,
            data=task_data(params, volume),
        )
        changes: dict[str, Any] = {"state": transient, "task_id": task.id, "fault": None}
        create: list[Record] = [] if given is not None else [task]
        consume = None
        if isinstance(params, ExtendParams):
            consume = {"volume_gib": params.size_gib - volume.size_gib}
            changes["size_gib"] = params.size_gib
        elif isinstance(params, AttachParams):
            changes["vm_id"] = params.vm_id
        elif isinstance(params, SnapshotVolumeParams):
            create.append(
                VolumeSnapshot(
                    id=params.snapshot_id,
                    tenant_id=volume.tenant_id,
                    volume_id=volume.id,
                    name=params.name,
                    size_gib=volume.size_gib,
                )
            )
        await self._save(changes, consume=consume, create=create)
        if isinstance(params, DeleteSnapshotParams):  # after: a resumed task deletes it anyway
            await self._set_snapshot(params.snapshot_id, VolumeSnapshotState.DELETING)
        if given is not None:
            return given
        stamp = self.volume.updated_at  # the store stamps what it creates with the change's time
        return msgspec.structs.replace(task, version=1, created_at=stamp, updated_at=stamp)

    def _start(self, source: VolumeState, params: VolumeParams, task: Task) -> None:
        journal = Journal(self.services.store, task, self.services.waiters)
        self.services.runners.add(task.id)
        _log.info("volume.task_started", volume_id=self.volume.id, task_id=task.id)
        self.work = asyncio.create_task(self._operate(source, journal, params))

    async def _operate(self, source: VolumeState, journal: Journal, params: VolumeParams) -> None:
        work = Work(self.services, self.context.system, self.driver, self.initiator_of, journal)
        error: str | None = None
        changes: dict[str, Any] = {}
        try:
            changes = await run(work, self.volume, params)
        except Exception as exc:
            error = describe(exc)
        try:
            await self.context.self_ref.ask(
                _VolumeFinish(
                    source=source, journal=journal, params=params, changes=changes, error=error
                ),
                timeout=self.services.settings.step_deadline,
            )
        finally:
            self.services.runners.discard(journal.task.id)

    async def _finish(self, message: _VolumeFinish) -> None:
        params, error = message.params, message.error
        t = TRANSITIONS[params.operation]
        give_back: dict[str, int] | None = None
        release = 0
        changes: dict[str, Any]
        if error is None:
            changes = {"state": t.success or message.source, "task_id": None, "fault": None}
            changes.update(message.changes)
            if isinstance(params, DeleteVolumeParams):
                give_back = volume_usage(self.volume.size_gib)
                release = self.volume.size_gib * MIB_PER_GIB
        else:
            changes = {"state": t.failure or message.source, "task_id": None, "fault": error}
            if isinstance(params, ExtendParams):  # back to the size it had, quota given back
                old = int(message.journal.task.data["size_gib_before"])
                give_back = {"volume_gib": self.volume.size_gib - old}
                release = (self.volume.size_gib - old) * MIB_PER_GIB
                changes["size_gib"] = old
            elif isinstance(params, AttachParams):
                changes.update(vm_id=None, target=None, device=None)
        release += await self._settle_snapshot(params, error)
        state = TaskState.FAILED if error else TaskState.SUCCEEDED
        try:  # the volume settles and its task ends in one transaction
            await self._save(changes, give_back=give_back, ending=(message.journal, state, error))
        except VersionConflict:  # the task was ended by another writer: the volume alone
            await self._save(changes, give_back=give_back)
            await message.journal.finish(state, error)
        if release:
            self.pool.tell(Release(size_mib=release))
        self.work = None
        if self.volume.state is S.DELETED:
            self.context.stop(self.context.self_ref)

    async def _settle_snapshot(self, params: VolumeParams, error: str | None) -> int:
        """The snapshot record after its operation; the pool room it gives back (MiB)."""
        if isinstance(params, SnapshotVolumeParams):
            if error is None:
                await self._set_snapshot(params.snapshot_id, VolumeSnapshotState.AVAILABLE)
                return 0
            await self._set_snapshot(params.snapshot_id, VolumeSnapshotState.ERROR, error)
            return self.volume.size_gib * MIB_PER_GIB
        if isinstance(params, DeleteSnapshotParams):
            if error is not None:
                await self._set_snapshot(params.snapshot_id, VolumeSnapshotState.ERROR, error)
                return 0
            try:
                snap = await self.services.store.get(VolumeSnapshot, params.snapshot_id)
                await self.services.store.delete(VolumeSnapshot, snap.id)
            except NotFound:  # deleted before a crash cut the task short: given back then
                return 0
            return snap.size_gib * MIB_PER_GIB
        return 0

    async def _set_snapshot(
        self, snapshot_id: str, state: VolumeSnapshotState, fault: str | None = None
    ) -> None:
        snap = await self.services.store.get(VolumeSnapshot, snapshot_id)
        await self.services.store.update(
            VolumeSnapshot, snap.id, expected_version=snap.version, state=state, fault=fault
        )

    # ----------------------------------------------------------------- crash and recovery

    async def _resume(self, task_id: str) -> None:
        """A task a crash cut short: run it again (its steps are idempotent); or, if it has
        ended, settle the record from what the backend holds."""
        try:
            task = await self.services.store.get(Task, task_id)
        except NotFound:
            task = None
        if task is None or task.state in FINAL:
            await self._settle_from_backend(f"task {task_id} ended without its volume settling")
            return
        params = task_params(task)
        source = self._source_of(params)
        _log.warning("volume.task_resumed", volume_id=self.volume.id, task_id=task_id)
        self._start(source, params, task)

    async def _revive(self, task_id: str) -> None:
        """The pool's watchdog found ``task_id`` RUNNING with nothing driving it: resume it if
        the volume is at it, else end it (the volume rests or has moved on: nothing will)."""
        if task_id in self.services.runners:
            return  # driven since the watchdog looked
        self.volume = await self.services.store.get(Volume, self.volume.id)  # rare: the truth
        if self.volume.task_id == task_id and self.volume.state not in STABLE:
            await self._resume(task_id)
            return
        task = await self.services.store.get(Task, task_id)
        if task.state in FINAL:
            return
        fault = f"interrupted; volume {self.volume.id} is {self.volume.state} now"
        journal = Journal(self.services.store, task, self.services.waiters)
        if self.volume.task_id == task_id:  # at rest yet holding it: let go with the end
            await self._save({"task_id": None}, ending=(journal, TaskState.FAILED, fault))
        else:
            await journal.finish(TaskState.FAILED, fault)
        _log.warning("volume.task_ended", volume_id=self.volume.id, task_id=task_id, error=fault)

    def _source_of(self, params: VolumeParams) -> VolumeState:
        """The stable state an interrupted operation started from."""
        t = TRANSITIONS[params.operation]
        if len(t.sources) == 1:
            return next(iter(t.sources))
        return S.ATTACHED if self.volume.vm_id is not None else S.AVAILABLE

    async def _settle_from_backend(self, fault: str) -> None:
        try:
            info = await self.driver.get_volume(self.volume.id)
        except NotFound:
            await self._save({"state": S.ERROR, "task_id": None, "fault": fault})
            return
        attached = info.exported_to is not None and self.volume.vm_id is not None
        await self._save(
            {"state": S.ATTACHED if attached else S.AVAILABLE, "task_id": None, "fault": fault}
        )

    async def _recover(self, verb: RecoverVerb) -> Any:
        """SUCCEED: the last task did what it should. FAIL: the volume takes what the backend
        shows. RETRY: its last operation (a create or a delete: those end in ERROR) runs again.
        DELETE: delete it. Only for a volume in ERROR."""
        if self.volume.state is not S.ERROR:
            raise IllegalTransition(
                f"recover applies to a volume in ERROR; volume {self.volume.id} is "
                f"{self.volume.state}"
            )
        last = await self._last_task()
        op = task_params(last).operation if last is not None else None
        if verb is RecoverVerb.DELETE or (
            verb is RecoverVerb.RETRY and op is VolumeOperation.DELETE
        ):
            return await self._request(DeleteVolumeParams(), None)
        if verb is RecoverVerb.RETRY and op is VolumeOperation.CREATE and last is not None:
            await self._save({"state": S.CREATING, "fault": None})
            return await self._request(task_params(last), None)
        if verb is RecoverVerb.SUCCEED and op is VolumeOperation.DELETE:
            await self._save(
                {"state": S.DELETED, "task_id": None, "fault": None},
                give_back=volume_usage(self.volume.size_gib),
            )
            self.pool.tell(Release(size_mib=self.volume.size_gib * MIB_PER_GIB))
            self.context.stop(self.context.self_ref)
        elif verb is RecoverVerb.SUCCEED:
            await self._save({"state": S.AVAILABLE, "task_id": None, "fault": None})
        else:
            await self._settle_from_backend(f"recovered ({verb}): {self.volume.fault}")
        _log.info("volume.recovered", volume_id=self.volume.id, verb=str(verb))
        return self.volume

    async def _last_task(self) -> Task | None:
        page = await self.services.store.list(
            Task, where={"subject": f"volume/{self.volume.id}"}, limit=1000
        )
        return page.items[-1] if page.items else None

    # ----------------------------------------------------------------- persistence

    async def _save(
        self,
        changes: dict[str, Any],
        *,
        consume: dict[str, int] | None = None,
        give_back: dict[str, int] | None = None,
        create: Sequence[Record] = (),
        ending: tuple[Journal, TaskState, str | None] | None = None,
    ) -> None:
        """Compare-and-set ``changes`` with the quota they move, a ``volume.state_changed``
        event, the records they ``create`` (the task they begin) and the end of the task
        ``ending`` (its journal, state and error), in one transaction; on a conflict the
        record is read again and the error raised."""
        volume = self.volume
        events = []
        if changes.get("state", volume.state) is not volume.state:
            events.append(
                OutboxEvent(
                    type="volume.state_changed",
                    subject=f"volume/{volume.id}",
                    tenant_id=volume.tenant_id,
                    data={
                        "state": str(changes["state"]),
                        "previous": str(volume.state),
                        "task_id": changes.get("task_id", volume.task_id),
                        "fault": changes.get("fault", volume.fault),
                    },
                )
            )
        end_task = None
        if ending is not None:
            journal, state, error = ending
            end_task, finished = journal.ending(state, error)
            events.append(finished)
        delta = {**(consume or {}), **{r: -n for r, n in (give_back or {}).items()}}
        try:
            self.volume = await self.services.store.update_charged(
                Volume,
                volume.id,
                expected_version=volume.version,
                tenant_id=volume.tenant_id,
                delta=delta,
                events=events,
                create=create,
                end_task=end_task,
                **changes,
            )
        except VersionConflict:
            self.volume = await self.services.store.get(Volume, volume.id)
            raise
        if ending is not None and end_task is not None:
            stamp = self.volume.updated_at
            ending[0].ended(
                msgspec.structs.replace(end_task, version=end_task.version + 1, updated_at=stamp)
            )


def task_data(params: VolumeParams, volume: Volume) -> dict[str, Any]:
    """What a volume task records: its parameters (to run it again after a crash), and the size
    an extend starts from (a failed one goes back to it)."""
    data: dict[str, Any] = {"params": msgspec.to_builtins(params)}
    if isinstance(params, ExtendParams):
        data["size_gib_before"] = volume.size_gib
    return data
