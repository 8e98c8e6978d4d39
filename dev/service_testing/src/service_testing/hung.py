"""A process that accepts connections, reads what it is sent and never answers: a hung
service, not a closed port. `python -m service_testing.hung PORT` runs one on
127.0.0.1:PORT until it is killed; `hung_process(port)` runs one around a block."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Read (so the sender's writes never block) and drop; the writer is never used.
    while await reader.read(65536):
        pass
    writer.close()


async def serve_hung(port: int) -> None:
    server = await asyncio.start_server(_hold, "127.0.0.1", port, reuse_address=True)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def hung_process(port: int, *, timeout: float = 10.0) -> Iterator[subprocess.Popen[bytes]]:
    """A hung process listening on `port` for the block (then killed)."""
    command = [sys.executable, "-m", "service_testing.hung", str(port)]
    process = subprocess.Popen(command)  # noqa: S603 - our own interpreter and module
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the hung process did not listen on {port}") from None
                time.sleep(0.05)
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(serve_hung(int(sys.argv[1])))
