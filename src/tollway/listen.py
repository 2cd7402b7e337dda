"""Listening sockets bound by Tollway itself and handed to the event loop.

Binding here (instead of letting ``loop.create_server(host=…)`` resolve the address) keeps startup
synchronous and free of the event loop's resolver threads: a uvloop worker was seen waiting forever in
``create_server`` before binding anything. SO_REUSEADDR is set (quick restarts), SO_REUSEPORT never
(two processes on one port would share Envoy's traffic unevenly and a stale one could take it).
"""

from __future__ import annotations

import socket


class ListenError(OSError):
    """A listener could not be opened; the message names the address."""


def bind_tcp(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A non-blocking listening TCP socket on ``host:port`` (port 0: any free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock
