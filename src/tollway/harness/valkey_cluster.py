"""A throwaway 3-master Valkey Cluster on loopback, for tests that must hold on a real cluster.

Each master is a ``valkey-server --cluster-enabled yes`` (no persistence, no replicas) with an explicit
cluster-bus port (free, not port + 10000). Slots are assigned with ``CLUSTER ADDSLOTSRANGE`` in equal
ranges and the nodes are joined with ``CLUSTER MEET`` from Python, then we wait until every node
reports ``cluster_state:ok`` and knows every other. No valkey-cli needed.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Self, cast

import redis

from tollway.harness.errors import HarnessError
from tollway.harness.ports import LOOPBACK, free_ports
from tollway.harness.processes import DEFAULT_TAIL_LINES, ManagedProcess, stop_all
from tollway.harness.valkey import ping, valkey_binary

SLOTS = 16384


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """Equal contiguous slot ranges (3 masters: 0-5460, 5461-10922, 10923-16383)."""
    bounds = [round(i * SLOTS / masters) for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


def _command(client: redis.Redis, *args: object) -> Any:
    return cast(Any, client).execute_command(*args)


class ValkeyCluster:
    """``masters`` cluster nodes on free loopback ports; ``start()``/``stop()`` or a context manager."""

    def __init__(self, work_dir: Path, masters: int = 3, *, name: str = "valkey-cluster") -> None:
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        ports = free_ports(2 * masters)
        self._ports = ports[:masters]
        self._bus_ports = ports[masters:]
        self._name = name
        self._dir = Path(work_dir) / f"{name}-{self._ports[0]}"
        self._processes: list[ManagedProcess] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def ports(self) -> list[int]:
        return list(self._ports)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(LOOPBACK, port) for port in self._ports]

    @property
    def url(self) -> str:
        """For ``redis.asyncio.cluster.RedisCluster.from_url`` (the other nodes are discovered)."""
        return f"redis://{LOOPBACK}:{self._ports[0]}"

    def is_running(self) -> bool:
        return bool(self._processes) and all(p.is_running() for p in self._processes)

    def _argv(self, port: int, bus_port: int, node_dir: Path) -> list[str]:
        return [
            str(valkey_binary()),
            "--port",
            str(port),
            "--cluster-port",
            str(bus_port),
            "--bind",
            LOOPBACK,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            "2000",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(node_dir),
            "--daemonize",
            "no",
            "--logfile",
            "",
            "--loglevel",
            "warning",
        ]

    def start(self, timeout: float = 20.0) -> Self:
        if self._processes:
            raise HarnessError(f"{self._name} was already started")
        try:
            for port, bus_port in zip(self._ports, self._bus_ports, strict=True):
                node_dir = self._dir / str(port)
                node_dir.mkdir(parents=True, exist_ok=True)
                process = ManagedProcess(
                    self._argv(port, bus_port, node_dir), log_dir=node_dir, name=f"{self._name}-{port}", cwd=node_dir
                )
                self._processes.append(process.start())
            for process, port in zip(self._processes, self._ports, strict=True):
                process.wait_for(
                    functools.partial(ping, LOOPBACK, port), timeout=timeout, description=f"PONG on {port}"
                )
            self._form(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _clients(self) -> list[redis.Redis]:
        return [redis.Redis(host=LOOPBACK, port=port, socket_timeout=5, decode_responses=True) for port in self._ports]

    def _form(self, timeout: float) -> None:
        clients = self._clients()
        try:
            for client, (low, high) in zip(clients, slot_ranges(len(clients)), strict=True):
                _command(client, "CLUSTER ADDSLOTSRANGE", low, high)
            for port, bus_port in zip(self._ports[1:], self._bus_ports[1:], strict=True):
                _command(clients[0], "CLUSTER MEET", LOOPBACK, port, bus_port)
            deadline = time.monotonic() + timeout
            while not all(self._node_ready(client) for client in clients):
                for process in self._processes:
                    if not process.is_running():
                        raise HarnessError(f"{process.name} exited while the cluster formed:\n{process.log_tail()}")
                if time.monotonic() >= deadline:
                    raise HarnessError(f"{self._name}: cluster_state did not become ok within {timeout:.0f}s")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def _node_ready(self, client: redis.Redis) -> bool:
        info = _command(client, "CLUSTER INFO")  # redis-py parses it into a dict
        if isinstance(info, str | bytes):
            text = info.decode() if isinstance(info, bytes) else info
            info = dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)
        fields = {str(k): str(v) for k, v in info.items()}
        return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(len(self._ports))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every node (idempotent; the logs stay readable)."""
        stop_all(self._processes, timeout)

    def log_tail(self, n_lines: int = DEFAULT_TAIL_LINES) -> str:
        return "".join(f"--- {p.name} ---\n{p.log_tail(n_lines)}" for p in self._processes)

    def __enter__(self) -> Self:
        if not self._processes:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
