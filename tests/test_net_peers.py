"""``PeerNetwork`` on real loopback sockets: delivery, the handshake's refusals, forged messages,
reconnection, loss accounting, bounded queues and back-pressure, and a clean stop.

Every scenario runs in ``asyncio.run`` under a deadline and waits for conditions by polling with
a bounded deadline, never for a fixed time. Peers that must misbehave (forge a source, fail to
prove the secret, stop reading) are raw stream connections speaking the handshake by hand with
the helpers of ``net.protocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable

import pytest

from chorusdb import limits
from chorusdb.core.api import ClientCommand
from chorusdb.core.leader_messages import (
    LEADER_MESSAGE_TYPES,
    Append,
    AppendReply,
    Forward,
    ForwardReply,
    SnapshotAck,
    SnapshotChunk,
    TimeoutNow,
    VoteReply,
    VoteRequest,
)
from chorusdb.core.model import (
    NO_EXPIRY,
    DeleteKeys,
    EpochStart,
    FlushAll,
    Kind,
    LogEntry,
    PopItems,
    Position,
    PushItems,
    Record,
    SetExpiry,
    SetValue,
)
from chorusdb.net import peers as peers_module
from chorusdb.net.peers import PeerNetwork
from chorusdb.net.protocol import (
    PEER_CODEC,
    PEER_TYPE_TAGS,
    Challenge,
    Hello,
    Refused,
    Welcome,
    acceptor_proof,
    dialer_proof,
    nonce_bytes,
    thaw_reply,
)
from chorusdb.replies import Error, Simple
from chorusdb.server.config import Address
from chorusdb.storage.encoding import STORAGE_TYPE_TAGS
from chorusdb.wire.frames import FrameDecoder, encode_frame
from chorusdb.wire.resp import NEED_DATA

HOST = "127.0.0.1"
CLUSTER = "test-cluster"
SECRET = b"correct horse battery staple"
SEED = 1729
scenario_timeout_s = 20.0
condition_timeout_s = 8.0
poll_interval_s = 0.005
raw_read_bytes = 65_536


def run(scenario) -> None:
    async def bounded():
        async with asyncio.timeout(scenario_timeout_s):
            await scenario()
    asyncio.run(bounded())


def free_port() -> int:
    """A port free right now: every node's address must be known before any node starts. Another
    process could take it before the node binds it; the kernel hands ports out in a wide range,
    so that is rare, and it fails loudly (the bind raises) rather than misleading a test."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + condition_timeout_s
    while not condition():
        assert loop.time() < deadline, f"timed out waiting until {what} (rng seed {SEED})"
        await asyncio.sleep(poll_interval_s)


class Node:
    """A ``PeerNetwork`` and what it received."""

    def __init__(self, node_id: str, ports: dict[str, int], *, secret: bytes = SECRET,
                 cluster_id: str = CLUSTER, **options) -> None:
        self.node_id = node_id
        self.received: list[object] = []
        self.network = PeerNetwork(
            node_id=node_id, cluster_id=cluster_id, secret=secret,
            listen=Address(HOST, ports[node_id]),
            peers={peer: Address(HOST, port) for peer, port in ports.items() if peer != node_id},
            on_message=self.received.append, rng=random.Random(SEED), **options)

    def status(self, peer: str) -> dict:
        return self.network.peer_status()[peer]

    def linked_to(self, peer: str) -> bool:
        return self.status(peer)["outbound"] == "connected" and self.status(peer)["inbound"]


@contextlib.asynccontextmanager
async def running(*nodes: Node):
    try:
        for node in nodes:
            await node.network.start()
        yield nodes
    finally:
        for node in nodes:
            await node.network.stop()


async def fully_linked(*nodes: Node) -> None:
    await wait_until(
        lambda: all(a.linked_to(b.node_id) for a in nodes for b in nodes if a is not b),
        "every node is linked to every other")


def append(source: str, target: str, index: int) -> Append:
    entries = (LogEntry(Position(1, index), SetValue(b"key%d" % index, b"v" * index, NO_EXPIRY)),
               LogEntry(Position(1, index + 1), PushItems(b"list", (b"a", b"b"), left=True)))
    return Append(source, target, 1, Position(1, index - 1), entries, Position(1, index - 1),
                  safe=Position(1, index - 2), sent_ms=1_700_000_000_000 + index)


def chunk(source: str, target: str, number: int, size: int) -> SnapshotChunk:
    return SnapshotChunk(source, target, 1, Position(1, 9), number, 1000, b"x" * size, 0)


# --- the registry ---------------------------------------------------------------------------------


def test_values_shared_with_storage_keep_storage_tags() -> None:
    shared = (Position, Record, SetValue, PushItems, PopItems, DeleteKeys, SetExpiry, FlushAll,
              EpochStart, LogEntry)
    storage_tag = {cls: tag for tag, cls in STORAGE_TYPE_TAGS.items()}
    peer_tag = {cls: tag for tag, cls in PEER_TYPE_TAGS.items()}
    for cls in shared:
        assert peer_tag[cls] == storage_tag[cls], cls.__name__
    for tag, cls in PEER_TYPE_TAGS.items():
        assert cls not in storage_tag or storage_tag[cls] == tag, cls.__name__
        assert cls in storage_tag or tag not in STORAGE_TYPE_TAGS, f"tag {tag} means two types"
    assert set(LEADER_MESSAGE_TYPES) <= set(PEER_TYPE_TAGS.values())
    assert {ClientCommand, Simple, Error} <= set(PEER_TYPE_TAGS.values())


def test_every_message_round_trips_through_a_frame() -> None:
    command = ClientCommand(b"RPUSH", (b"k", b"\x00\xff"))
    messages = [
        append("n1", "n2", 5),
        Append("n1", "n2", 4, Position(3, 7), (LogEntry(Position(4, 8), EpochStart("n1")),),
               Position(3, 6), safe=Position(3, 7), sent_ms=2**53),
        AppendReply("n2", "n1", 3, Position(3, 7), Position(3, 6), accepted=False,
                    incarnation=2**62 - 1, echo_ms=1_700_000_000_123, hint=Position(2, 4)),
        VoteRequest("n3", "n1", 5, Position(4, 12), pre=True, transfer=False),
        VoteRequest("n3", "n2", 5, Position(4, 12), pre=False, transfer=True),
        VoteReply("n1", "n3", 5, pre=False, granted=True),
        VoteReply("n2", "n3", 5, pre=True, granted=False),
        TimeoutNow("n1", "n2", 4),
        chunk("n1", "n2", 4, 100),
        SnapshotAck("n2", "n1", 1, Position(1, 9), 5),
        Forward("n2", "n1", 1, 77, 8, command),
        ForwardReply("n1", "n2", 1, 77, 8, [Simple("OK"), Error("ERR no"), [b"a", None, 3]],
                     Position(1, 9)),
        Hello(CLUSTER, "n1", limits.peer_protocol_version, b"n" * nonce_bytes, b"p" * 32),
        Record(Kind.LIST, (b"a",), NO_EXPIRY, 3),
    ]
    assert set(LEADER_MESSAGE_TYPES) <= {type(message) for message in messages}
    for message in messages:
        decoder = FrameDecoder(PEER_CODEC)
        decoder.receive_data(encode_frame(PEER_CODEC, message))
        decoded = decoder.next_frame()
        if isinstance(message, ForwardReply):
            assert decoded.value == (Simple("OK"), Error("ERR no"), (b"a", None, 3))
            assert thaw_reply(decoded.value) == message.value
        else:
            assert decoded == message


def test_thaw_reply_turns_tuples_back_into_lists_and_leaves_the_rest() -> None:
    assert thaw_reply((b"a", (1, None, (Simple("OK"),)), Error("ERR x"))) == \
        [b"a", [1, None, [Simple("OK")]], Error("ERR x")]
    assert thaw_reply({b"k": (b"v",), "n": 1}) == {b"k": [b"v"], "n": 1}
    for plain in (b"bulk", 7, None, 2.5, True, Simple("PONG"), Error("ERR e"), "text"):
        assert thaw_reply(plain) == plain and type(thaw_reply(plain)) is type(plain)


def test_proofs_depend_on_every_input_and_on_the_role() -> None:
    base = (SECRET, b"n" * nonce_bytes, CLUSTER, "n1")
    proofs = {dialer_proof(*base), acceptor_proof(*base), dialer_proof(b"other", *base[1:]),
              dialer_proof(SECRET, b"m" * nonce_bytes, *base[2:]),
              dialer_proof(*base[:2], "test-cluste", "rn1"),  # same concatenation as base
              dialer_proof(*base[:3], "n2")}
    assert len(proofs) == 6


# --- delivery -------------------------------------------------------------------------------------


def test_two_nodes_exchange_appends_and_forwarded_replies() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        n1, n2 = Node("n1", ports), Node("n2", ports)
        async with running(n1, n2):
            await fully_linked(n1, n2)
            assert n1.network.bound_address() == Address(HOST, ports["n1"])
            appends = [append("n1", "n2", index) for index in range(1, 30, 2)]
            for message in appends:
                n1.network.send(message)
            value = [Simple("OK"), Error("NOTLEADER n2"), [b"x", [1, None]], {b"f": [b"y"]}]
            reply = ForwardReply("n2", "n1", 1, 5, 6, value, Position(1, 3))
            forward = Forward("n2", "n1", 1, 5, 7, ClientCommand(b"SET", (b"k", b"v")))
            n2.network.send(reply)
            n2.network.send(forward)
            await wait_until(lambda: len(n2.received) == len(appends) and len(n1.received) == 2,
                             "both sides received everything")
            assert n2.received == appends
            got_reply, got_forward = n1.received
            assert got_forward == forward
            assert thaw_reply(got_reply.value) == value
            assert got_reply.position == reply.position
            assert n1.status("n2")["sent_frames"] == len(appends)
            assert n2.status("n1")["received_frames"] == len(appends)
            assert n2.status("n1")["sent_frames"] == 2
            assert n1.status("n2")["dropped_frames"] == n2.status("n1")["dropped_frames"] == 0
    run(scenario)


def test_three_nodes_exchange_appends_between_every_pair() -> None:
    async def scenario():
        ports = {name: free_port() for name in ("n1", "n2", "n3")}
        nodes = [Node(name, ports) for name in ports]
        async with running(*nodes):
            await fully_linked(*nodes)
            expected: dict[str, list] = {node.node_id: [] for node in nodes}
            for index, (sender, receiver) in enumerate(
                    (a, b) for a in nodes for b in nodes if a is not b):
                message = append(sender.node_id, receiver.node_id, index + 1)
                sender.network.send(message)
                expected[receiver.node_id].append(message)
            await wait_until(lambda: all(len(node.received) == 2 for node in nodes),
                             "every node received one message from each peer")
            for node in nodes:
                assert sorted(node.received, key=lambda m: m.source) == \
                    sorted(expected[node.node_id], key=lambda m: m.source)
    run(scenario)


def test_send_to_a_down_peer_drops_and_counts() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        n1 = Node("n1", ports)
        async with running(n1):
            await wait_until(lambda: n1.status("n2")["last_error"] is not None,
                             "the dial to n2 failed")
            assert "unreachable" in n1.status("n2")["last_error"]
            for index in range(3):
                n1.network.send(append("n1", "n2", index + 1))
            status = n1.status("n2")
            assert status["outbound"] in ("connecting", "disconnected")
            assert (status["dropped_frames"], status["sent_frames"], status["queued_bytes"]) == \
                (3, 0, 0)
    run(scenario)


def test_a_restarted_peer_is_reconnected_and_messages_flow_again() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        n1, n2 = Node("n1", ports), Node("n2", ports)
        async with running(n1):
            async with running(n2):
                await fully_linked(n1, n2)
                n1.network.send(append("n1", "n2", 1))
                await wait_until(lambda: n2.received, "n2 received the first append")
            await wait_until(lambda: n1.status("n2")["outbound"] != "connected"
                             and not n1.status("n2")["inbound"], "n1 saw n2 go")
            n1.network.send(append("n1", "n2", 2))
            assert n1.status("n2")["dropped_frames"] == 1
            again = Node("n2", ports)
            async with running(again):
                await fully_linked(n1, again)
                n1.network.send(append("n1", "n2", 3))
                again.network.send(append("n2", "n1", 4))
                await wait_until(lambda: again.received and n1.received, "messages flow again")
                assert again.received == [append("n1", "n2", 3)]
                assert n1.received == [append("n2", "n1", 4)]
    run(scenario)


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("secrets", [(SECRET, b"another secret"), (b"", SECRET)],
                         ids=["different", "one-empty"])
def test_a_peer_with_the_wrong_secret_is_refused_and_nothing_is_delivered(secrets, caplog) -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        n1, n2 = Node("n1", ports, secret=secrets[0]), Node("n2", ports, secret=secrets[1])
        async with running(n1, n2):
            await wait_until(lambda: n1.status("n2")["handshake_failures"] >= 2
                             and n2.status("n1")["handshake_failures"] >= 2,
                             "both sides refused each other")
            for node, peer in ((n1, "n2"), (n2, "n1")):
                assert "wrong cluster secret" in node.status(peer)["last_error"]
                assert node.status(peer)["outbound"] != "connected"
                assert not node.status(peer)["inbound"]
                node.network.send(append(node.node_id, peer, 1))
                assert node.status(peer)["dropped_frames"] == 1
            assert n1.received == n2.received == []
    run(scenario)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("wrong cluster secret: check cluster.secret_file on both nodes" in text
               for text in warnings), warnings


def test_nodes_without_a_secret_link_up() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        n1, n2 = Node("n1", ports, secret=b""), Node("n2", ports, secret=b"")
        async with running(n1, n2):
            await fully_linked(n1, n2)
            n2.network.send(append("n2", "n1", 1))
            await wait_until(lambda: n1.received == [append("n2", "n1", 1)], "n1 received")
    run(scenario)


def test_a_peer_of_another_cluster_is_refused() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        n1, n2 = Node("n1", ports), Node("n2", ports, cluster_id="elsewhere")
        async with running(n1, n2):
            await wait_until(lambda: n1.status("n2")["handshake_failures"] >= 2,
                             "n1 refused n2 and was refused by it")
            assert "check cluster.id on both nodes" in n1.status("n2")["last_error"]
            assert "elsewhere" in n2.status("n1")["last_error"]
            assert not n1.linked_to("n2") and not n2.linked_to("n1")
    run(scenario)


def test_an_unknown_node_id_is_refused() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        n1 = Node("n1", ports)
        stranger = Node("n9", {"n9": free_port(), "n1": ports["n1"]})
        async with running(n1, stranger):
            await wait_until(lambda: n1.network.stranger_handshake_failures >= 1
                             and stranger.status("n1")["handshake_failures"] >= 1,
                             "n1 refused n9")
            assert "'n9' is not in this node's cluster.members" in \
                stranger.status("n1")["last_error"]
            assert not stranger.status("n1")["outbound"] == "connected"
            assert n1.status("n2")["handshake_failures"] == 0
    run(scenario)


def test_an_oversized_frame_before_the_handshake_closes_the_connection() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        n1 = Node("n1", ports)
        async with running(n1):
            reader, writer = await asyncio.open_connection(HOST, ports["n1"])
            writer.write((peers_module.handshake_frame_bytes_max + 1).to_bytes(4, "big"))
            assert await read_until_eof(reader) == [Challenge]
            writer.close()
            await wait_until(lambda: n1.network.stranger_handshake_failures == 1, "counted")
    run(scenario)


def test_a_dialled_address_that_answers_as_another_node_is_left() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n3": free_port()}
        n1 = Node("n1", {"n1": ports["n1"], "n2": ports["n3"]})  # n2's address is n3's
        n3 = Node("n3", ports)
        async with running(n1, n3):
            await wait_until(lambda: n1.status("n2")["handshake_failures"] >= 1, "n1 left n3")
            assert "is node 'n3', not 'n2': check the peer address of n2" in \
                n1.status("n2")["last_error"]
            assert n1.status("n2")["outbound"] != "connected"
    run(scenario)


def test_handshakes_that_do_not_finish_in_time_are_abandoned(monkeypatch) -> None:
    monkeypatch.setattr(peers_module, "handshake_timeout_s", 0.2)

    async def scenario():
        async def mute(reader, writer):
            await reader.read()  # never sends a challenge; returns when the dialer leaves
            writer.close()

        server = await asyncio.start_server(mute, HOST, 0)
        ports = {"n1": free_port(), "n2": server.sockets[0].getsockname()[1]}
        n1 = Node("n1", ports)
        async with server, running(n1):
            reader, writer = await asyncio.open_connection(HOST, ports["n1"])
            assert await read_until_eof(reader) == [Challenge]  # and then nothing from us
            writer.close()
            await wait_until(lambda: n1.network.stranger_handshake_failures == 1
                             and n1.status("n2")["handshake_failures"] >= 1, "both timed out")
            assert "did not complete the handshake within 0.2 s" in n1.status("n2")["last_error"]
    run(scenario)


def test_handshakes_pending_at_once_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(peers_module, "handshakes_pending_max", 2)

    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        n1 = Node("n1", ports)
        async with running(n1):
            waiting = [await asyncio.open_connection(HOST, ports["n1"]) for _ in range(2)]
            for reader, _ in waiting:
                assert type(await read_message(reader, FrameDecoder(PEER_CODEC))) is Challenge
            reader, writer = await asyncio.open_connection(HOST, ports["n1"])
            assert await read_until_eof(reader) == []
            writer.close()
            for _, waiting_writer in waiting:
                waiting_writer.close()
            assert n1.network.stranger_handshake_failures == 1
    run(scenario)


def test_a_hello_of_another_protocol_version_is_refused() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        n1 = Node("n1", ports)
        async with running(n1):
            reader, writer = await asyncio.open_connection(HOST, ports["n1"])
            decoder = FrameDecoder(PEER_CODEC)
            challenge = await read_message(reader, decoder)
            writer.write(encode_frame(PEER_CODEC, Hello(
                CLUSTER, "n2", limits.peer_protocol_version + 1, b"d" * nonce_bytes,
                dialer_proof(SECRET, challenge.nonce, CLUSTER, "n2"))))
            refused = await read_message(reader, decoder)
            assert type(refused) is Refused
            assert "run one ChorusDB version on every node" in refused.reason
            assert await read_until_eof(reader) == []
            writer.close()
            assert n1.status("n2")["handshake_failures"] == 1 and not n1.status("n2")["inbound"]
    run(scenario)


# --- misbehaving peers, spoken to by hand ---------------------------------------------------------


async def read_until_eof(reader: asyncio.StreamReader) -> list[type]:
    """The types of the frames that arrive until the other side closes."""
    decoder = FrameDecoder(PEER_CODEC)
    types = []
    while data := await reader.read(raw_read_bytes):
        decoder.receive_data(data)
        while (message := decoder.next_frame()) is not NEED_DATA:
            types.append(type(message))
    return types


async def read_message(reader: asyncio.StreamReader, decoder: FrameDecoder) -> object:
    while (message := decoder.next_frame()) is NEED_DATA:
        data = await reader.read(raw_read_bytes)
        assert data, "the connection closed"
        decoder.receive_data(data)
    return message


async def dial_by_hand(port: int, node_id: str) -> tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]:
    """A connection to the node at ``port`` that passed the handshake as ``node_id``."""
    reader, writer = await asyncio.open_connection(HOST, port)
    decoder = FrameDecoder(PEER_CODEC)
    challenge = await read_message(reader, decoder)
    assert type(challenge) is Challenge
    nonce = b"d" * nonce_bytes
    writer.write(encode_frame(PEER_CODEC, Hello(
        CLUSTER, node_id, limits.peer_protocol_version, nonce,
        dialer_proof(SECRET, challenge.nonce, CLUSTER, node_id))))
    welcome = await read_message(reader, decoder)
    assert type(welcome) is Welcome
    assert welcome.proof == acceptor_proof(SECRET, nonce, CLUSTER, welcome.node_id)
    return reader, writer


@pytest.mark.parametrize("forged", [append("n3", "n1", 1), append("n2", "n3", 1), Position(1, 1)],
                         ids=["source", "target", "not-a-peer-message"])
def test_a_message_not_from_the_authenticated_peer_closes_the_connection(forged) -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port(), "n3": free_port()}
        n1 = Node("n1", ports)
        async with running(n1):
            reader, writer = await dial_by_hand(ports["n1"], "n2")
            await wait_until(lambda: n1.status("n2")["inbound"], "n1 accepted n2")
            writer.write(encode_frame(PEER_CODEC, append("n2", "n1", 7)) +
                         encode_frame(PEER_CODEC, forged) +
                         encode_frame(PEER_CODEC, append("n2", "n1", 8)))
            assert await read_until_eof(reader) == []
            writer.close()
            await wait_until(lambda: not n1.status("n2")["inbound"], "n1 dropped the link")
            assert n1.received == [append("n2", "n1", 7)]
            assert n1.status("n2")["last_error"].startswith("peer n2 (connected from 127.0.0.1)")
    run(scenario)


def test_a_new_connection_from_a_peer_replaces_its_previous_one() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        n1 = Node("n1", ports)
        async with running(n1):
            old_reader, old_writer = await dial_by_hand(ports["n1"], "n2")
            reader, writer = await dial_by_hand(ports["n1"], "n2")
            assert await read_until_eof(old_reader) == []
            writer.write(encode_frame(PEER_CODEC, append("n2", "n1", 1)))
            await wait_until(lambda: n1.received == [append("n2", "n1", 1)], "n1 received")
            assert n1.status("n2")["inbound"]
            old_writer.close()
            writer.close()
    run(scenario)


def test_a_listener_that_cannot_prove_the_secret_is_never_sent_to() -> None:
    async def scenario():
        seen: list[type] = []

        async def impostor(reader, writer):
            decoder = FrameDecoder(PEER_CODEC)
            writer.write(encode_frame(PEER_CODEC, Challenge(b"c" * nonce_bytes)))
            hello = await read_message(reader, decoder)
            seen.append(type(hello))
            writer.write(encode_frame(PEER_CODEC, Welcome("n2", b"\x00" * 32)))
            seen.extend(await read_until_eof(reader))
            writer.close()

        server = await asyncio.start_server(impostor, HOST, 0)
        ports = {"n1": free_port(), "n2": server.sockets[0].getsockname()[1]}
        n1 = Node("n1", ports)
        async with server, running(n1):
            await wait_until(lambda: n1.status("n2")["handshake_failures"] >= 1,
                             "n1 rejected the impostor")
            n1.network.send(append("n1", "n2", 1))
            assert "could not prove that it knows the cluster secret" in \
                n1.status("n2")["last_error"]
            assert n1.status("n2")["dropped_frames"] == 1
        assert seen and set(seen) == {Hello}, seen
    run(scenario)


# --- bounded queues -------------------------------------------------------------------------------


def test_the_queue_bound_drops_and_counts() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port()}
        size = 300 * 1024
        n1 = Node("n1", ports, queue_bytes_max=1024 * 1024)
        n2 = Node("n2", ports)
        async with running(n1, n2):
            await fully_linked(n1, n2)
            for number in range(10):  # one burst: nothing is written before the loop turns
                n1.network.send(chunk("n1", "n2", number, size))
            status = n1.status("n2")
            assert status["dropped_frames"] == 7
            assert 3 * size < status["queued_bytes"] <= 1024 * 1024
            await wait_until(lambda: len(n2.received) == 3, "n2 received the queued frames")
            assert [message.chunk for message in n2.received] == [0, 1, 2]
            assert n1.status("n2")["queued_bytes"] == 0
            assert n1.status("n2")["sent_frames"] == 3
    run(scenario)


def test_a_peer_that_stops_reading_fills_the_queue_then_gets_everything_queued() -> None:
    queue_bytes_max = 1024 * 1024
    size = 128 * 1024
    sends_max = 2000  # far more than loopback buffers hold (~10 MiB), far less than a hang

    async def scenario():
        accepted: asyncio.Queue = asyncio.Queue()

        async def slow_peer(reader, writer):
            decoder = FrameDecoder(PEER_CODEC)
            nonce = b"a" * nonce_bytes
            writer.write(encode_frame(PEER_CODEC, Challenge(nonce)))
            hello = await read_message(reader, decoder)
            assert hello.proof == dialer_proof(SECRET, nonce, CLUSTER, "n1")
            writer.write(encode_frame(PEER_CODEC, Welcome("n2", acceptor_proof(
                SECRET, hello.nonce, CLUSTER, "n2"))))
            await accepted.put((reader, writer, decoder))

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        listener.bind((HOST, 0))
        server = await asyncio.start_server(slow_peer, sock=listener)
        ports = {"n1": free_port(), "n2": listener.getsockname()[1]}
        n1 = Node("n1", ports, queue_bytes_max=queue_bytes_max)
        async with server, running(n1):
            reader, writer, decoder = await accepted.get()
            await wait_until(lambda: n1.status("n2")["outbound"] == "connected", "n1 linked")
            queued = []
            for number in range(sends_max):
                n1.network.send(chunk("n1", "n2", number, size))
                if n1.status("n2")["dropped_frames"]:
                    break
                queued.append(number)
                await asyncio.sleep(0)
            assert n1.status("n2")["dropped_frames"] == 1, "the queue never filled"
            assert n1.status("n2")["queued_bytes"] > queue_bytes_max - size - 1024
            assert n1.status("n2")["outbound"] == "connected"
            numbers = [(await read_message(reader, decoder)).chunk for _ in queued]
            assert numbers == queued
            await wait_until(lambda: n1.status("n2")["queued_bytes"] == 0, "the queue drained")
            assert n1.status("n2")["sent_frames"] == len(queued)
            writer.close()
    run(scenario)


# --- stopping -------------------------------------------------------------------------------------


def test_stop_closes_everything_leaves_no_tasks_and_is_idempotent() -> None:
    async def scenario():
        ports = {"n1": free_port(), "n2": free_port(), "n3": free_port()}  # n3 never starts
        n1, n2 = Node("n1", ports), Node("n2", ports)
        async with running(n1, n2):
            await fully_linked(n1, n2)
            n1.network.send(append("n1", "n2", 1))
        await n1.network.stop()
        await n2.network.stop()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert not n1.network.connections and not n2.network.connections
        for status in (*n1.network.peer_status().values(), *n2.network.peer_status().values()):
            assert status["outbound"] == "disconnected" and not status["inbound"]
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, ports["n1"])
        never_started = Node("n3", ports)
        await never_started.network.stop()
    run(scenario)
