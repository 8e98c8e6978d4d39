"""The ports tests start servers on (`service_testing.free_port`)."""

from __future__ import annotations

import socket

from service_testing import free_port
from service_testing.servers import _lowest_ephemeral_port


def test_ports_come_from_below_the_ephemeral_range_and_never_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert max(ports) < _lowest_ephemeral_port()


def test_a_port_handed_out_is_free_to_bind() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
