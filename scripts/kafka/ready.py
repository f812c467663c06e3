#!/usr/bin/env python3
"""Whether a Kafka broker answers a metadata request: `ready.py HOST:PORT [TIMEOUT_S]`.

Exit 0 once the broker at HOST:PORT answers Metadata (v4, which every Kafka 4.x broker takes)
listing at least one broker, printing the brokers it lists ("1@127.0.0.1:9092 ..."); exit 1 if
that does not happen within TIMEOUT_S seconds (default 0: one try). A TCP connect is not
enough: a KRaft broker listens before it has joined its quorum and been unfenced.
"""
import socket
import struct
import sys
import time


def metadata(host, port):
    client = b"kollus-ready"
    # Request header v1: api_key 3 (Metadata), version 4, correlation id, client id.
    header = struct.pack(">hhih", 3, 4, 1, len(client)) + client
    # Body v4: topics (an empty list asks for none; the brokers are listed all the same) and
    # allow_auto_topic_creation.
    body = struct.pack(">i?", 0, False)
    req = header + body
    with socket.create_connection((host, port), timeout=3) as s:
        s.settimeout(3)
        s.sendall(struct.pack(">i", len(req)) + req)
        size = struct.unpack(">i", recv(s, 4))[0]
        data = recv(s, size)
    # Response: correlation id, throttle_time_ms, brokers [node_id, host, port, rack].
    off = 8
    (n,) = struct.unpack_from(">i", data, off)
    off += 4
    brokers = []
    for _ in range(max(n, 0)):
        (node,) = struct.unpack_from(">i", data, off)
        off += 4
        (hlen,) = struct.unpack_from(">h", data, off)
        off += 2
        bhost = data[off : off + hlen].decode()
        off += hlen
        (bport,) = struct.unpack_from(">i", data, off)
        off += 4
        (rlen,) = struct.unpack_from(">h", data, off)
        off += 2 + max(rlen, 0)
        brokers.append(f"{node}@{bhost}:{bport}")
    return brokers


def recv(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def main():
    host, _, port = sys.argv[1].rpartition(":")
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            brokers = metadata(host, int(port))
            if brokers:
                print(" ".join(brokers))
                return 0
        except (OSError, ConnectionError, struct.error, UnicodeDecodeError):
            pass
        if time.monotonic() >= deadline:
            return 1
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
