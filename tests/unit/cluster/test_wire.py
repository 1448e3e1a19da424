"""The wire codec: envelopes round-trip, refs travel, unknown types and versions are refused."""

from __future__ import annotations

import msgspec
import pytest

from cloudcore.cluster import MessageRegistry
from cloudcore.cluster.wire import ASK, TELL, WIRE_VERSION, Codec, UnknownType, WireError
from cloudcore.runtime import ActorRef, Message


class Carry(Message, frozen=True, kw_only=True):
    n: int
    to: ActorRef


class FakeRef(ActorRef):
    __slots__ = ("_node",)

    def __init__(self, node: str, path: str) -> None:
        self._node = node
        self.path = path

    @property
    def node(self) -> str:
        return self._node


def make_codec() -> Codec:
    return Codec(MessageRegistry(), lambda node, path: FakeRef(node, path))


def test_a_message_with_a_ref_round_trips() -> None:
    codec = make_codec()
    data = codec.encode(TELL, "a", 7, 1, "/user/x", Carry(n=3, to=FakeRef("b", "/user/y")), "Carry")
    env = codec.envelope(data)
    assert (env.v, env.kind, env.sender, env.inc, env.id, env.target) == (
        WIRE_VERSION,
        TELL,
        "a",
        7,
        1,
        "/user/x",
    )
    message = codec.payload(env)
    assert isinstance(message, Carry) and message.n == 3
    assert (message.to.node, message.to.path) == ("b", "/user/y")


def test_ask_fields_survive() -> None:
    codec = make_codec()
    env = codec.envelope(
        codec.encode(ASK, "a", 1, 9, "/user/x", 5, "", corr=9, deadline=12.5, after=4)
    )
    assert (env.corr, env.deadline, env.after) == (9, 12.5, 4)
    assert codec.payload(env) == 5


def test_an_unknown_type_tag_is_refused() -> None:
    codec = make_codec()
    data = codec.encode(TELL, "a", 1, 1, "/user/x", {"type": "NoSuchThing"}, "NoSuchThing")
    with pytest.raises(UnknownType):
        codec.payload(codec.envelope(data))


def test_garbage_and_other_versions_are_refused() -> None:
    codec = make_codec()
    with pytest.raises(WireError):
        codec.envelope(b"\xc1 not msgpack")
    other = msgspec.msgpack.encode([WIRE_VERSION + 1, TELL, "a", 1, 1, "/x", "", 0, 0, 0.0, 0])
    with pytest.raises(WireError, match="version"):
        codec.envelope(other)


def test_a_payload_of_the_wrong_shape_is_refused() -> None:
    codec = make_codec()
    data = codec.encode(TELL, "a", 1, 1, "/user/x", {"type": "Carry", "n": "three"}, "Carry")
    with pytest.raises(WireError):
        codec.payload(codec.envelope(data))


def test_something_that_cannot_travel_fails_at_the_sender() -> None:
    codec = make_codec()
    with pytest.raises(TypeError):
        codec.encode(TELL, "a", 1, 1, "/user/x", object(), "")


def test_a_tag_two_classes_share_is_refused_unless_one_is_registered() -> None:
    def make_clash() -> type:
        class Carry(Message, frozen=True, kw_only=True):  # same tag as the module's Carry
            other: str

        return Carry

    clash = make_clash()
    registry = MessageRegistry()
    assert registry.resolve("Carry") is None
    registry.register(clash)
    assert registry.resolve("Carry") is clash
