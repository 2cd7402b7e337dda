"""The deliveries' HTTP/1.1 client against small loopback servers: keep-alive reuse, chunked and
length-delimited answers, ``connection: close``, a pooled connection the server closed while idle,
malformed answers, the per-attempt timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tollway.notifications.http_post import HttpError, HttpPoster

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


async def serving(handler: Handler) -> tuple[asyncio.Server, list[int]]:
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        n = 0
        try:
            while True:
                await read_request(reader)
                n += 1
                if not await handler(reader, writer, n):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, connections


def url(server: asyncio.Server) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook?x=1"


def test_keep_alive_chunked_and_length_answers_reuse_one_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        if n % 2:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 3\r\n\r\nabc")
        await writer.drain()
        return True

    async def main() -> None:
        server, connections = await serving(handler)
        poster = HttpPoster()
        statuses = [(await poster.post(url(server), b"{}", {"x": "1"}, 2)).status for _ in range(6)]
        await poster.aclose()
        server.close()
        assert statuses == [200, 202] * 3
        assert len(connections) == 1

    asyncio.run(main())


def test_connection_close_and_a_connection_closed_while_idle_are_not_failures() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        return False  # closes after each answer without saying so

    async def main() -> None:
        server, connections = await serving(handler)
        poster = HttpPoster()
        for _ in range(3):
            assert (await poster.post(url(server), b"{}", {}, 2)).status == 204
            await asyncio.sleep(0.05)
        await poster.aclose()
        server.close()
        assert len(connections) == 3

    asyncio.run(main())


def test_http_1_0_body_to_the_end_and_redirect_status() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.0 302 Found\r\nlocation: http://elsewhere/\r\n\r\nmoved")
        await writer.drain()
        return False

    async def main() -> None:
        server, _ = await serving(handler)
        poster = HttpPoster()
        answer = await poster.post(url(server), b"{}", {}, 2)
        await poster.aclose()
        server.close()
        assert answer.status == 302
        assert answer.headers["location"] == "http://elsewhere/"

    asyncio.run(main())


def test_malformed_answer_refused_port_and_timeout() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        return False

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        await asyncio.sleep(5)
        return False

    async def main() -> None:
        poster = HttpPoster()
        server, _ = await serving(garbage)
        with pytest.raises(HttpError, match="not an HTTP"):
            await poster.post(url(server), b"{}", {}, 2)
        server.close()
        port = server.sockets[0].getsockname()[1] if server.sockets else 9
        await server.wait_closed()
        with pytest.raises(HttpError, match="cannot connect"):
            await poster.post(f"http://127.0.0.1:{port}/", b"{}", {}, 2)
        slow, _ = await serving(silent)
        with pytest.raises(TimeoutError):
            await poster.post(url(slow), b"{}", {}, 0.2)
        slow.close()
        with pytest.raises(HttpError, match="not an http"):
            await poster.post("ftp://x/", b"", {}, 1)
        await poster.aclose()

    asyncio.run(main())


def test_a_resolver_chooses_the_address_and_can_refuse() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        return True

    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        if host == "refused.example":
            raise ValueError("the host resolves to 10.0.0.1, a private address; not sent")
        return ["127.0.0.1"]

    async def main() -> None:
        server, _ = await serving(handler)
        port = server.sockets[0].getsockname()[1]
        poster = HttpPoster(resolve=resolve)
        assert (await poster.post(f"http://hooks.example:{port}/x", b"{}", {}, 2)).status == 204
        with pytest.raises(ValueError, match="private"):
            await poster.post(f"http://refused.example:{port}/x", b"{}", {}, 2)
        await poster.aclose()
        server.close()
        assert asked == [("hooks.example", port), ("refused.example", port)]

    asyncio.run(main())
