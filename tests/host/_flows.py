"""Bounded test traffic, run inside a test namespace with ``ip netns exec``.

    recv HOST PORT...   accept one TCP connection per port, read it until
                        EOF (or the deadline), print a JSON report
    send HOST DURATION PORT...
                        one TCP connection per port, send for DURATION s
    udp HOST PORT COUNT send COUNT small UDP datagrams to HOST:PORT

Every socket has a timeout and every run a hard deadline (``--deadline``
seconds, default 15), so nothing outlives its test.
"""

import argparse
import json
import socket
import sys
import threading
import time

CHUNK = 1 << 16


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def recv(host, ports, deadline, warmup):
    """Goodput (payload bytes/s) per port, measured from ``warmup`` s after
    the first byte to the last byte, and the connection's MSS."""
    end = time.monotonic() + deadline
    listeners = {}
    for port in ports:
        s = socket.socket(_family(host), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(1)
        s.settimeout(1.0)
        listeners[port] = s
    print("READY", flush=True)
    report = {}

    def serve(port, lsock):
        row = report.setdefault(str(port), {"bytes": 0})
        conn = None
        while conn is None and time.monotonic() < end:
            try:
                conn, _ = lsock.accept()
            except socket.timeout:
                continue
        lsock.close()
        if conn is None:
            row["error"] = "no connection"
            return
        with conn:
            conn.settimeout(1.0)
            row["mss"] = conn.getsockopt(socket.IPPROTO_TCP,
                                         socket.TCP_MAXSEG)
            total, first, warm = 0, None, None
            last = None
            while time.monotonic() < end:
                try:
                    data = conn.recv(CHUNK)
                except socket.timeout:
                    continue
                if not data:
                    break
                now = time.monotonic()
                total += len(data)
                if first is None:
                    first = now
                elif warm is None and now - first >= warmup:
                    warm = (now, total)
                last = now
            row["bytes"] = total
            if warm is not None and last > warm[0]:
                row["goodput"] = (total - warm[1]) / (last - warm[0])
                row["window"] = last - warm[0]

    threads = [threading.Thread(target=serve, args=item, daemon=True)
               for item in listeners.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, end - time.monotonic()) + 1.0)
    print(json.dumps(report), flush=True)


def send(host, duration, ports, deadline):
    report = {}

    def flow(port):
        row = report.setdefault(str(port), {"bytes": 0})
        stop = time.monotonic() + min(duration, deadline)
        buf = b"\0" * CHUNK
        try:
            with socket.create_connection((host, port), timeout=5.0) as s:
                s.settimeout(2.0)
                while time.monotonic() < stop:
                    row["bytes"] += s.send(buf)
                s.shutdown(socket.SHUT_WR)
        except OSError as exc:
            row["error"] = str(exc)

    threads = [threading.Thread(target=flow, args=(p,), daemon=True)
               for p in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline)
    print(json.dumps(report), flush=True)


def udp(host, port, count):
    with socket.socket(_family(host), socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        for _ in range(count):
            try:
                s.sendto(b"x" * 100, (host, port))
            except OSError:
                pass  # an ICMP port unreachable from the peer: ignore
            time.sleep(0.002)


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--deadline", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=0.5)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv")
    r.add_argument("host")
    r.add_argument("ports", type=int, nargs="+")
    s = sub.add_parser("send")
    s.add_argument("host")
    s.add_argument("duration", type=float)
    s.add_argument("ports", type=int, nargs="+")
    u = sub.add_parser("udp")
    u.add_argument("host")
    u.add_argument("port", type=int)
    u.add_argument("count", type=int)
    a = p.parse_args(argv)
    if a.cmd == "recv":
        recv(a.host, a.ports, a.deadline, a.warmup)
    elif a.cmd == "send":
        send(a.host, a.duration, a.ports, a.deadline)
    else:
        udp(a.host, a.port, a.count)


if __name__ == "__main__":
    main(sys.argv[1:])
