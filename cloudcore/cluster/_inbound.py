"""Completion of inbound messages: when the target actor has handled one, act at once.

A batch (one AMQP delivery) is acknowledged when every message taken from it is handled.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from cloudcore.cluster.wire import TELL, Envelope
from cloudcore.errors import ActorStopped, AskTimeout
from cloudcore.transport import Delivery

if TYPE_CHECKING:
    from cloudcore.cluster._remoting import Remoting

__all__ = ["Batch", "Completion", "expire"]


class Batch:
    """Acknowledges a delivery once every item taken from it has been handled."""

    __slots__ = ("_delivery", "pending", "sealed")

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery
        self.pending = 0
        self.sealed = False

    def done(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self.sealed:
            self._delivery.ack()

    def seal(self) -> None:
        self.sealed = True
        if self.pending == 0:
            self._delivery.ack()


class Completion(asyncio.Future[Any]):
    """The future of one inbound message in the target's mailbox (as an ``_Ask``).

    It acts the moment the actor's cell resolves it, in the same step as ``receive`` returning
    (a done-callback would run a loop iteration later, after the actor may have handled dozens
    more messages): a tell is journaled as handled, an ask answered, the batch counted.
    """

    __slots__ = ("_batch", "_env", "_remoting", "timer")

    def __init__(self, remoting: Remoting, batch: Batch | None, env: Envelope) -> None:
        super().__init__(loop=remoting._loop)
        self._remoting = remoting
        self._batch = batch
        self._env = env
        self.timer: asyncio.TimerHandle | None = None

    def set_result(self, result: Any) -> None:
        super().set_result(result)
        self._finish(result, None)

    def set_exception(self, exception: type | BaseException) -> None:
        super().set_exception(exception)
        error = self.exception()  # retrieved: the error is answered or was logged by the cell
        self._finish(None, error)

    def _finish(self, result: Any, error: BaseException | None) -> None:
        remoting = self._remoting
        env = self._env
        if remoting.closing and isinstance(error, ActorStopped):
            return  # refused while this node stops: leave it unacknowledged for the next one
        if env.kind == TELL:
            remoting.dedup.handled((env.inc, env.id))
        else:
            if self.timer is not None:
                self.timer.cancel()
            if not isinstance(error, AskTimeout):  # past its deadline nobody waits for it
                remoting._reply(env, result, error)
        if self._batch is not None:
            self._batch.done()


def expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(AskTimeout("deadline passed before the actor took the message"))
