"""Free loopback TCP ports for local stacks.

A port is found by binding ``127.0.0.1:0`` (without SO_REUSEPORT) and closing the socket again, so
there is a short window in which another program could take it. To keep two stacks started by the
same process from colliding, ports handed out here are not handed out again by this process.
"""

import socket
import threading

LOOPBACK = "127.0.0.1"

_issued: set[int] = set()
_issued_lock = threading.Lock()
_MAX_ATTEMPTS = 100


def _bind_ephemeral() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, 0))
    except OSError:
        sock.close()
        raise
    return sock


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct loopback ports that are free now and new to this process."""
    if count < 0:
        raise ValueError("count must be >= 0")
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        with _issued_lock:
            attempts = 0
            while len(ports) < count:
                attempts += 1
                if attempts > _MAX_ATTEMPTS + count:
                    raise OSError("could not find enough free loopback ports")
                sock = _bind_ephemeral()
                port = int(sock.getsockname()[1])
                if port in _issued:
                    sock.close()
                    continue
                # Keep the socket bound until all ports are chosen, so the kernel cannot repeat one.
                held.append(sock)
                ports.append(port)
            _issued.update(ports)
    finally:
        for sock in held:
            sock.close()
    return ports


def free_port() -> int:
    """Return one loopback port that is free now and new to this process."""
    return free_ports(1)[0]
