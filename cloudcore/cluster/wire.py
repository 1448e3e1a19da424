"""The wire format: msgpack envelopes around msgpack messages (msgspec), never pickle.

An envelope is a msgpack array (positional, so small)::

    [version, kind, sender, incarnation, id, target, tag, payload, correlation, deadline, after]

- ``version``: :data:`WIRE_VERSION`; another version is refused.
- ``kind``: TELL, ASK, REPLY, FAILURE (an ask's error) or CONTROL (membership).
- ``sender``, ``incarnation``: the sending node and a random number drawn when it started;
  with ``id`` (a counter) they name the message for de-duplication.
- ``target``: the recipient actor's path on the receiving node ("" for replies and control).
- ``tag``: the message type (see registry); "" for plain data (an ask's non-message result).
- ``payload``: the message, as msgspec encodes it; an ActorRef inside it is ``[node, path]``.
- ``correlation``: pairs a REPLY or FAILURE with its ASK.
- ``deadline``: for an ASK, ``time.time()`` after which nobody waits for the answer; 0 = none.
- ``after``: for an ASK, the id of the last TELL its sender sent to the same node (0: none).
  Asks travel on the fast control queue, tells on the durable one; the receiver holds an ask
  until that tell has arrived (at most ASK_BARRIER_WAIT, 1 s: the tell may have been
  dead-lettered), so a tell followed by an ask from one node stay in order.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, Final

import msgspec

from cloudcore.cluster.registry import MessageRegistry
from cloudcore.errors import CloudcoreError, InvalidMessage
from cloudcore.runtime import ActorRef, Message

__all__ = [
    "ASK",
    "CONTROL",
    "FAILURE",
    "REPLY",
    "TELL",
    "WIRE_VERSION",
    "Codec",
    "Envelope",
    "Failure",
    "UnknownType",
    "WireError",
]

WIRE_VERSION: Final = 1
TELL: Final = 0
ASK: Final = 1
REPLY: Final = 2
FAILURE: Final = 3
CONTROL: Final = 4


class WireError(CloudcoreError):
    """An envelope that cannot be read: wrong version or malformed."""


class UnknownType(WireError):
    """An envelope names a message type this node does not know."""


class Failure(Message, frozen=True, kw_only=True, tag="cloudcore.Failure"):
    """The error an ask's handler raised, as it travels back."""

    error_type: str
    module: str
    text: str
    retryable: bool = False


class _Outgoing(msgspec.Struct, array_like=True):
    v: int
    kind: int
    sender: str
    inc: int
    id: int
    target: str
    tag: str
    payload: Any
    corr: int
    deadline: float
    after: int


class Envelope(msgspec.Struct, array_like=True):
    """A decoded envelope; ``payload`` is still encoded (see :meth:`Codec.payload`)."""

    v: int
    kind: int
    sender: str
    inc: int
    id: int
    target: str
    tag: str
    payload: msgspec.Raw
    corr: int = 0
    deadline: float = 0.0
    after: int = 0


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, ActorRef):
        return (obj.node, obj.path)
    raise InvalidMessage(f"{type(obj).__name__} cannot travel inside a message")


class Codec:
    """Encodes and decodes envelopes for one node; ``resolve_ref(node, path)`` turns a ref on
    the wire back into an ActorRef bound to this node."""

    def __init__(
        self, registry: MessageRegistry, resolve_ref: Callable[[str, str], ActorRef[Any]]
    ) -> None:
        self._registry = registry
        self._resolve_ref = resolve_ref
        self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
        self._envelopes = msgspec.msgpack.Decoder(Envelope)
        self._plain = msgspec.msgpack.Decoder(dec_hook=self._dec_hook)
        self._decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {}

    def encode(
        self,
        kind: int,
        sender: str,
        inc: int,
        msg_id: int,
        target: str,
        payload: Any,
        tag: str,
        corr: int = 0,
        deadline: float = 0.0,
        after: int = 0,
    ) -> bytes:
        """One envelope. Raises InvalidMessage (a TypeError) if the payload holds something
        that cannot travel."""
        out = _Outgoing(
            WIRE_VERSION, kind, sender, inc, msg_id, target, tag, payload, corr, deadline, after
        )
        return self._encoder.encode(out)

    def envelope(self, raw: Any) -> Envelope:
        """Decode one envelope; WireError if malformed or of another version."""
        try:
            env = self._envelopes.decode(raw)
        except msgspec.DecodeError as exc:
            raise WireError(f"undecodable envelope: {exc}") from exc
        if env.v != WIRE_VERSION:
            raise WireError(f"wire version {env.v} is not {WIRE_VERSION}")
        return env

    def payload(self, env: Envelope) -> Any:
        """Decode the envelope's message; UnknownType or WireError if it cannot be."""
        tag = env.tag
        if not tag:
            try:
                return self._plain.decode(env.payload)
            except msgspec.DecodeError as exc:
                raise WireError(f"undecodable payload: {exc}") from exc
        decoder = self._decoders.get(tag)
        if decoder is None:
            cls = self._registry.resolve(tag)
            if cls is None:
                raise UnknownType(f"unknown message type {tag!r}")
            decoder = self._decoders[tag] = msgspec.msgpack.Decoder(cls, dec_hook=self._dec_hook)
        try:
            return decoder.decode(env.payload)
        except msgspec.DecodeError as exc:
            raise WireError(f"undecodable {tag} payload: {exc}") from exc

    def _dec_hook(self, cls: Any, obj: Any) -> Any:
        cls = typing.get_origin(cls) or cls  # an ActorRef[M] field comes as the generic alias
        if isinstance(cls, type) and issubclass(cls, ActorRef):
            node, path = obj
            return self._resolve_ref(str(node), str(path))
        raise NotImplementedError(f"cannot decode {cls!r}")
