"""An echo backend to run as a subprocess, so a test can kill it for real (SIGKILL).

Every accepted socket gets SO_LINGER 0, so when the process dies the kernel resets
its connections (RST) instead of closing them. Prints ``PORT <n>`` once listening,
then ``MSG <text>`` for each text message received, flushed at once.
"""

from __future__ import annotations

import socket
import struct
import sys

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve


def handle(ws: ServerConnection) -> None:
    ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        for message in ws:
            print("MSG", message, flush=True)
            ws.send(message)
    except ConnectionClosed:
        pass


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    with serve(handle, "127.0.0.1", port, compression=None, ping_interval=None) as server:
        print("PORT", server.socket.getsockname()[1], flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
