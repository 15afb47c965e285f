"""The wire protocol's table against the code that sends and handles each message."""

import inspect
import pathlib

from purerun.core import client, node_state, protocol
from purerun.core.node_state import NodeState

CORE = pathlib.Path(client.__file__).parent


def test_every_message_the_node_takes_has_a_handler_and_every_handler_a_message():
    source = inspect.getsource(NodeState.__init__)
    handled = {name for name, m in vars(protocol).items()
               if isinstance(m, int) and f"protocol.{name}: self._on_" in source}
    declared = {m.name for m in protocol.MESSAGES.values()
                if m.direction in (protocol.TO_NODE, protocol.FROM_WORKER,
                                   protocol.BETWEEN_NODES)}
    # A node is also a client of the nodes it talks to: it takes what they send clients.
    answers = {"OBJECT", "REPLY", "WARN"}
    assert handled == declared | answers


def test_every_request_op_is_declared_with_the_arguments_its_handler_takes():
    source = inspect.getsource(NodeState.__init__)
    for op, (arguments, _reply) in protocol.REQUESTS.items():
        assert f'"{op}": self._request_{op},' in source, op
        method = getattr(NodeState, f"_request_{op}")
        names = list(inspect.signature(method).parameters)[2:]  # self, token
        assert tuple(names) == arguments, op
    defined = {name[len("_request_"):] for name in dir(NodeState)   # mixins' too
               if name.startswith("_request_")}
    assert defined == set(protocol.REQUESTS)


def test_every_request_the_client_side_makes_is_declared():
    import re
    used = set()
    for path in CORE.parent.rglob("*.py"):
        used |= set(re.findall(r'request\("([a-z_]+)"', path.read_text()))
    assert used <= set(protocol.REQUESTS), used - set(protocol.REQUESTS)


def test_the_client_reads_every_message_sent_to_it():
    source = (CORE / "client.py").read_text()
    for message in protocol.MESSAGES.values():
        if message.direction in (protocol.TO_CLIENT, protocol.TO_WORKER):
            assert f"protocol.{message.name}" in source, message.name


def test_messages_carry_the_fields_the_table_gives():
    for code, message in protocol.MESSAGES.items():
        assert getattr(protocol, message.name) == code
        assert all(field.isidentifier() for field in message.fields)
    for code, (name, _fields) in protocol.PAYLOAD_KINDS.items():
        assert getattr(protocol, name) == code


def test_node_internal_events_do_not_collide_with_wire_codes():
    internal = {node_state.DRIVER_CONNECTED, node_state.WORKER_STARTED,
                node_state.DISCONNECTED, node_state.WORKER_OUTPUT, node_state.TICK,
                node_state.NODE_DIED, node_state.HEAD_LOST, node_state.NODE_ADDED,
                node_state.HEARTBEAT_ANSWER}
    assert not internal & set(protocol.MESSAGES)
