"""A bare HTTP/2 gRPC client for tests: it sends header values that grpc's own client refuses to send.

grpc's client checks metadata before it leaves the process (no bytes outside ASCII in a text header), so a
hostile client writing its own frames is the only way to see what the daemon does with them.
"""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.events

__all__ = ["RawReply", "raw_unary_call"]


class RawReply:
    """What the daemon answered: its grpc-status (None when the stream was reset) and grpc-message."""

    def __init__(self, status: int | None, message: str) -> None:
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"RawReply({self.status}, {self.message!r})"


def raw_unary_call(
    address: str, method: str, request: bytes, metadata: list[tuple[bytes, bytes]], timeout: float = 10
) -> RawReply:
    """Make one unary call with `metadata` sent byte for byte; return the daemon's status."""
    host, port = address.rsplit(":", 1)
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    connection = h2.connection.H2Connection(config=config)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", method.encode()),
            (b":authority", address.encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *metadata,
        ]
        connection.send_headers(stream, headers)
        connection.send_data(stream, struct.pack(">?I", False, len(request)) + request, end_stream=True)
        sock.sendall(connection.data_to_send())
        status: int | None = None
        message = ""
        while True:
            data = sock.recv(65536)
            if not data:
                return RawReply(status, message)
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    for name, value in event.headers:
                        if name in (b"grpc-status", "grpc-status"):
                            status = int(value)
                        elif name in (b"grpc-message", "grpc-message"):
                            message = value.decode() if isinstance(value, bytes) else value
                elif isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return RawReply(status, message)
            sock.sendall(connection.data_to_send())
