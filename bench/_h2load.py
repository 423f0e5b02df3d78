"""Unary throughput measured with h2load, a load generator in C, which leaves the CPUs to the server.

DESIGN 9: a Python client costs about as much CPU per call as the server, so on a small machine it caps the
figure it measures. h2load (Debian's nghttp2-client) posts a framed gRPC request (a zero byte, a 4-byte
big-endian length, the message) with `content-type: application/grpc` and `te: trailers` over HTTP/2
connections with many streams each. It counts HTTP statuses, not gRPC ones; the Get asked for is answered
OK or not found, both fine for a rate.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from stord.v1 import kv_pb2

__all__ = ["available", "get_rate"]

_FINISHED = re.compile(r"finished in [\d.]+\w*, ([\d.]+) req/s")
_SUCCEEDED = re.compile(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded")


def available() -> bool:
    """Whether h2load is installed (`apt-get install nghttp2-client`)."""
    return shutil.which("h2load") is not None


def get_rate(
    address: str, key: str, requests: int = 12_000, connections: int = 2, streams: int = 16
) -> float:
    """Requests/s of CacheService/Get of `key` at `address`; raise RuntimeError if any request failed."""
    message = kv_pb2.CacheServiceGetRequest(key=key).SerializeToString()
    with tempfile.TemporaryDirectory(prefix="stord-h2load-") as directory:
        body = Path(directory) / "get.bin"
        body.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
        done = subprocess.run(
            [
                "h2load", "-n", str(requests), "-c", str(connections), "-m", str(streams),
                "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
                f"http://{address}/stord.v1.CacheService/Get",
            ],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finished, succeeded = _FINISHED.search(done.stdout), _SUCCEEDED.search(done.stdout)
    if done.returncode != 0 or finished is None or succeeded is None or succeeded[1] != succeeded[2]:
        raise RuntimeError(f"h2load failed: {done.stdout[-400:]}{done.stderr[-400:]}")
    return float(finished[1])
