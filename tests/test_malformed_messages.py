"""A connection that sends the node something broken loses that connection, nothing more.

A node serves every driver and worker of its host from one loop, so whatever one peer sends
— bytes that are not a frame, a frame that does not unpickle (say a class from a module the
node cannot import, as a driver from another environment would send), a message of an
unknown or internal kind, or one with the wrong fields — must close that peer's connection
with a log line and leave the node serving everyone else.
"""

import os
import pickle
import socket
import struct
import sys
import types

import pytest

import purerun
from purerun.core import protocol
from purerun.core.node import _FROM_LOCAL, _FROM_NODES, malformed
from purerun.core.node_state import NODE_DIED, TICK

pytestmark = pytest.mark.timeout(120)

# How long the node may take to close a connection that sent something broken.
CLOSE_DEADLINE_S = 10.0


@purerun.remote
def add_one(x):
    return x + 1


@pytest.fixture(scope="module")
def node_socket():
    purerun.init(num_cpus=1)
    assert purerun.get(add_one.remote(1)) == 2    # the node is up and listening
    info = purerun.get_runtime_context()._info()
    yield os.path.join(info["session_dir"], "node.sock")
    purerun.shutdown()


def _frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


def _unimportable_pickle() -> bytes:
    """A pickle of an instance of a class whose module exists only in this process."""
    module = types.ModuleType("purerun_test_only_here")
    cls = type("OnlyHere", (), {"__module__": module.__name__})
    module.OnlyHere = cls
    sys.modules[module.__name__] = module
    try:
        return pickle.dumps(cls())
    finally:
        del sys.modules[module.__name__]


def _closed_by_node(path, data) -> bool:
    """Send ``data`` on a fresh connection; True if the node then closes it."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(CLOSE_DEADLINE_S)
        sock.connect(path)
        sock.sendall(data)
        try:
            while sock.recv(1 << 16):
                pass    # the WELCOME, then nothing: the node closes
        except ConnectionResetError:
            pass
        except socket.timeout:
            return False
    return True


BROKEN = {
    "bytes that are no frame": b"\xff\xff\xff\x7fnot a frame at all",
    "a frame that is not a pickle": _frame(b"0123456789"),
    "a truncated pickle": _frame(pickle.dumps(("x" * 50, 1))[:-5]),
    "a class the node cannot import": _frame(_unimportable_pickle()),
    "not a tuple": _frame(pickle.dumps(12345)),
    "an empty tuple": _frame(pickle.dumps(())),
    "an unknown kind": _frame(pickle.dumps((9999, "x"))),
    "a kind that is no int": _frame(pickle.dumps(("SUBMIT", None))),
    "an internal event": _frame(pickle.dumps((NODE_DIED, b"\x00" * 16, "forged"))),
    "a timer tick": _frame(pickle.dumps((TICK,))),
    "a message for clients": _frame(pickle.dumps((protocol.WARN,))),
    "a message between nodes": _frame(pickle.dumps((protocol.FETCH, b"\x00" * 16))),
    "too few fields": _frame(pickle.dumps((protocol.SUBMIT,))),
    "too many fields": _frame(pickle.dumps((protocol.PUT, 1, 2, 3, 4, 5))),
    "a field of the wrong type": _frame(pickle.dumps((protocol.SUBMIT, "not a spec"))),
}


@pytest.mark.parametrize("what", sorted(BROKEN))
def test_a_broken_message_closes_its_connection_and_the_node_keeps_serving(node_socket, what):
    assert _closed_by_node(node_socket, BROKEN[what]), f"{what}: the connection stayed open"
    assert purerun.get(add_one.remote(41), timeout=30) == 42


def test_a_driver_keeps_working_while_strangers_send_garbage_in_between(node_socket):
    refs = []
    for what in sorted(BROKEN):
        refs.append(add_one.remote(len(refs)))
        assert _closed_by_node(node_socket, BROKEN[what]), what
    assert purerun.get(refs, timeout=30) == list(range(1, len(refs) + 1))


def test_an_unknown_request_is_answered_with_an_error_not_a_closed_connection(node_socket):
    reader = protocol.FrameReader()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(CLOSE_DEADLINE_S)
        sock.connect(node_socket)
        sock.sendall(protocol.encode((protocol.REQUEST, 7, "no such op", ())))
        replies = []
        while not replies:
            replies = [m for m in reader.feed(sock.recv(1 << 16)) if m[0] == protocol.REPLY]
    assert replies[0][:3] == (protocol.REPLY, 7, False)
    assert "unknown request 'no such op'" in str(replies[0][3])


# -- the boundary rule itself ----------------------------------------------------------------------

def test_every_kind_a_driver_or_worker_sends_passes_with_its_fields():
    for code, message in protocol.MESSAGES.items():
        msg = (code,) + (None,) * len(message.fields)
        local = message.direction in (protocol.TO_NODE, protocol.FROM_WORKER)
        assert (malformed(msg, _FROM_LOCAL) == "") == local, message


def test_other_nodes_may_also_move_objects_and_answer_as_a_server():
    for code in (protocol.RESULTS, protocol.FETCH, protocol.DATA, protocol.FETCH_FAILED,
                 protocol.NODE_HELLO, protocol.OBJECT, protocol.REPLY, protocol.WARN,
                 protocol.SUBMIT, protocol.REQUEST, protocol.GENERATOR_ITEM,
                 protocol.ITEM_READ):
        msg = (code,) + (None,) * len(protocol.MESSAGES[code].fields)
        assert malformed(msg, _FROM_NODES) == ""
    for code in (protocol.EXECUTE, protocol.TASK_DONE, protocol.WELCOME):
        msg = (code,) + (None,) * len(protocol.MESSAGES[code].fields)
        assert "may not send" in malformed(msg, _FROM_NODES)


def test_the_reason_names_what_was_wrong():
    assert "'list'" in malformed([protocol.SUBMIT, None], _FROM_LOCAL)
    assert "9999" in malformed((9999,), _FROM_LOCAL)
    assert malformed((protocol.PUT, 1), _FROM_LOCAL) == "PUT with 1 fields instead of 4"
