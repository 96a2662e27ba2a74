"""A TCP relay that holds every byte for a fixed one-way time in each direction: the lab's stand-in
for ``tc netem delay`` on a kernel without ``sch_netem`` (tools/lab.py).

``python -m sanlab.tools.delay_line --listen HOST:PORT --to HOST:PORT --delay-ms D`` accepts
connections, opens one to ``--to`` for each, and passes the bytes both ways, each chunk released
``D`` ms after it arrived, in order.  A lab starts one in a site's namespace per delayed link and
points the site's remote for that peer at it, so every replication connection the array opens to
the peer sees ``D`` ms each way (a round trip of ``2 D``, as netem on both ends of the link gives).

What it cannot do: loss (TCP below it retransmits; a lost segment is netem's alone) and a rate.
The relay reads ahead at most :data:`WINDOW_BYTES` per direction, so a fast sender is slowed as a
long link's window would slow it, and memory stays bounded.  When either side closes or fails,
what is in flight is delivered, then the other side is closed.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
import time

WINDOW_BYTES = 8 << 20
"""Bytes one direction holds in flight at most (the rest waits in the socket buffers)."""
CHUNK = 1 << 16


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Bytes from ``reader`` to ``writer``, each chunk ``delay`` s after it arrived."""
    held: collections.deque[tuple[float, bytes]] = collections.deque()
    room = asyncio.Event()
    room.set()
    more = asyncio.Event()
    inflight = 0
    ended = False

    async def take() -> None:
        nonlocal inflight, ended
        try:
            while True:
                await room.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                held.append((time.monotonic() + delay, data))
                inflight += len(data)
                if inflight >= WINDOW_BYTES:
                    room.clear()
                more.set()
        except (ConnectionError, OSError):
            pass
        finally:
            ended = True
            more.set()

    taker = asyncio.ensure_future(take())
    try:
        while True:
            if not held:
                if ended:
                    break
                more.clear()
                await more.wait()
                continue
            due, data = held[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            held.popleft()
            inflight -= len(data)
            if inflight < WINDOW_BYTES:
                room.set()
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        taker.cancel()
        await asyncio.gather(taker, return_exceptions=True)


async def _serve(listen: tuple[str, int], to: tuple[str, int], delay: float) -> None:
    async def one(down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*to)
        except OSError:
            down_w.close()
            return
        try:
            await asyncio.gather(_pump(down_r, up_w, delay), _pump(up_r, down_w, delay))
        finally:
            for w in (up_w, down_w):
                w.close()

    server = await asyncio.start_server(one, *listen, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"delay line {listen[0]}:{listen[1]} -> {to[0]}:{to[1]}, {delay * 1000:g} ms each way", flush=True)
    async with server:
        await stop.wait()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    """``python -m sanlab.tools.delay_line``: relay until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m sanlab.tools.delay_line", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=_address, required=True, help="HOST:PORT to accept on")
    p.add_argument("--to", type=_address, required=True, help="HOST:PORT to connect each connection to")
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay in each direction (ms)")
    args = p.parse_args(argv)
    if args.delay_ms < 0:
        p.error("--delay-ms must be >= 0")
    asyncio.run(_serve(args.listen, args.to, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
