"""``tollway meter``: the metering process, beside one or more ``tollway serve`` processes that only check.

It serves Envoy's gRPC access-log stream and the body meter (TOLLWAY_METERING_PORT), runs the loader
from the spool into ClickHouse, and answers the caller usage endpoint (TOLLWAY_USAGE_PORT); it answers
no ext_authz check. The check processes run with ``TOLLWAY_LOADER=off`` and ``TOLLWAY_METERING_PORT=0``
and still write every decision row to the same spool directory before answering.

Why a process of its own: in one process, the access-log rows and the loader's batches are Python work
on the event loop (and its GIL) that answers checks, so every check waits behind them. Split, the
check path runs as in a deployment without metering, and the metering work runs beside it
(docs/usage-tracking.md, "Topology").
"""

from __future__ import annotations

import argparse

import uvloop

from tollway.cli.numbers import ascii_int
from tollway.server import serve
from tollway.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "meter", help="run the metering process: access-log stream, body meter, loader, caller usage endpoint"
    )
    parser.add_argument("--host", help="listen address (TOLLWAY_HOST)")
    parser.add_argument(
        "--metering-port", type=ascii_int, help="access-log and body-meter gRPC port (TOLLWAY_METERING_PORT)"
    )


def metering_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings of the metering process: no ext_authz listener, the loader on. Raises ``ValueError``
    when there is nothing to meter (no spool directory) or nowhere to receive it (no metering port)."""
    updates: dict[str, object] = {"http_port": 0, "grpc_port": 0, "workers": 1, "loader": "auto"}
    for name in ("host", "metering_port"):
        if getattr(args, name, None) is not None:
            updates[name] = getattr(args, name)
    metering = Settings.model_validate({**settings.model_dump(), **updates})
    if metering.spool_dir is None:
        raise ValueError("`tollway meter` needs TOLLWAY_SPOOL_DIR: the spool the check processes write to")
    if not metering.metering_port:
        raise ValueError("`tollway meter` needs a metering port (TOLLWAY_METERING_PORT or --metering-port)")
    return metering


def run(args: argparse.Namespace, settings: Settings) -> int:
    uvloop.run(serve(metering_settings(args, settings)))  # no check answered here: no pepper needed
    return 0
