# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""The testbed's client traffic: the video guest's frames, a bulk flow.

In the client's namespace (``hosts.CLIENT_NETNS``, a testbed made with
``lan=True``), ``python -m rtmig_nova.testbed.traffic frames`` receives
the datagrams of ``rtmig-video`` (``rtmig.dest=``) and appends one record
per datagram to a file (:data:`RECORD`: the arrival time, the host's
CLOCK_MONOTONIC in ns, from the kernel's receive timestamp, then the
datagram's frame, index, count, release and send times);
``... traffic sink`` accepts TCP connections and discards what they send.
:class:`FrameReceiver` and :class:`BulkFlow` start and stop them from the
host; :func:`read_records` reads a record file.

Every address these talk to is the testbed's own (its namespaces), and
every process is bounded by its ``--duration``.
"""

import argparse
import contextlib
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np

DATAGRAM = struct.Struct("<IHHQQQ")     # video.c's struct datagram
DATAGRAM_MAGIC = 0x564d5452
RECORD = np.dtype([("arrival_ns", "<i8"), ("frame", "<u8"),
                   ("index", "<u2"), ("count", "<u2"),
                   ("release_ns", "<u8"), ("sent_ns", "<u8")])
FRAME_PORT = 5004
SINK_PORT = 5201
MAX_DURATION_S = 3600.0
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_SCM_TIMESTAMPNS = _SO_TIMESTAMPNS
_RCVBUF = 4 << 20
# Set by SIGTERM: the loops end as at their duration (records flushed).
_STOPPING = threading.Event()


def _clock_offset_ns():
    """CLOCK_REALTIME - CLOCK_MONOTONIC now, ns (the kernel stamps
    datagrams in real time)."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.monotonic_ns()


def receive_frames(port, out_path, duration_s, ready=None):
    """Receive frame datagrams on UDP ``port`` for ``duration_s`` seconds,
    appending :data:`RECORD` entries to ``out_path`` (flushed every
    second).  Datagrams that are not ``rtmig-video``'s are ignored.
    Returns the number of records written."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.bind(("0.0.0.0", port))
    if ready is not None:
        ready()
    end = time.monotonic() + duration_s
    offset = _clock_offset_ns()
    next_flush = time.monotonic() + 1.0
    rec = np.zeros(1, RECORD)
    written = 0
    pending = []
    ancbuf = socket.CMSG_SPACE(16)
    with open(out_path, "ab") as out:
        while True:
            now = time.monotonic()
            if now >= end or _STOPPING.is_set():
                break
            if now >= next_flush:
                out.write(b"".join(pending))
                out.flush()
                pending.clear()
                offset = _clock_offset_ns()
                next_flush = now + 1.0
            ready_fds, _, _ = select.select([sock], [], [],
                                            min(0.2, end - now))
            if ready_fds:
                written += _take(sock, ancbuf, offset, rec, pending)
        # what is queued already, when stopped (the sender may be done)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            for _ in range(_RCVBUF // DATAGRAM.size):
                written += _take(sock, ancbuf, offset, rec, pending)
        out.write(b"".join(pending))
    sock.close()
    return written


def _take(sock, ancbuf, offset, rec, pending):
    """Receive one datagram into ``pending``; 1 if it was a frame's."""
    data, anc, _flags, _addr = sock.recvmsg(65535, ancbuf)
    if len(data) < DATAGRAM.size:
        return 0
    magic, index, count, frame, release, sent = DATAGRAM.unpack_from(data)
    if magic != DATAGRAM_MAGIC:
        return 0
    arrival = None
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS \
                and len(value) >= 16:
            sec, nsec = struct.unpack("qq", value[:16])
            arrival = sec * 1_000_000_000 + nsec - offset
    if arrival is None:
        arrival = time.monotonic_ns()
    rec[0] = (arrival, frame, index, count, release, sent)
    pending.append(rec.tobytes())
    return 1


def read_records(path):
    """The :data:`RECORD` array of a frame receiver's file (a partial
    last record, from a receiver killed mid-write, is dropped)."""
    data = open(path, "rb").read()
    usable = len(data) - len(data) % RECORD.itemsize
    return np.frombuffer(data[:usable], dtype=RECORD)


def sink(port, duration_s, ready=None):
    """Accept TCP connections on ``port`` for ``duration_s`` seconds and
    discard what they send; returns the bytes received."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(8)
    if ready is not None:
        ready()
    end = time.monotonic() + duration_s
    conns, total = [], 0
    buf = bytearray(1 << 16)
    while time.monotonic() < end and not _STOPPING.is_set():
        ready_fds, _, _ = select.select([srv] + conns, [], [],
                                        min(0.2, end - time.monotonic()))
        for s in ready_fds:
            if s is srv:
                conns.append(srv.accept()[0])
                continue
            n = s.recv_into(buf)
            if n == 0:
                conns.remove(s)
                s.close()
            total += n
    for s in conns + [srv]:
        s.close()
    return total


def _bounded_duration(text):
    value = float(text)
    if not 0 < value <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(
            "a duration of 0 to %g s" % MAX_DURATION_S)
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m rtmig_nova.testbed.traffic",
        description="the testbed client's traffic ends (see the module)")
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("frames", help="receive rtmig-video's datagrams")
    f.add_argument("--port", type=int, default=FRAME_PORT)
    f.add_argument("--out", required=True)
    f.add_argument("--duration", type=_bounded_duration, required=True)
    s = sub.add_parser("sink", help="discard TCP streams")
    s.add_argument("--port", type=int, default=SINK_PORT)
    s.add_argument("--duration", type=_bounded_duration, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: _STOPPING.set())

    def ready():
        print("ready", flush=True)

    if args.what == "frames":
        n = receive_frames(args.port, args.out, args.duration, ready)
        print("records %d" % n, flush=True)
    else:
        n = sink(args.port, args.duration, ready)
        print("bytes %d" % n, flush=True)
    return 0


class _Helper:
    """A ``traffic`` subprocess in a namespace (``prefix``: the argv that
    enters it), started and waited for until it says it is ready."""

    def __init__(self, prefix, args, duration_s, ready_timeout=30.0):
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        self.duration_s = duration_s
        self.proc = subprocess.Popen(
            list(prefix) + [sys.executable, "-m", "rtmig_nova.testbed.traffic",
                            *args, "--duration", "%g" % duration_s],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env)
        line = _readline(self.proc, ready_timeout)
        if line.strip() != "ready":
            err = self.stop()
            raise RuntimeError("traffic %s did not start: %s"
                               % (args[0], err or line.strip()))

    def stop(self, timeout=10.0):
        """Stop (early, or wait for its end); returns its last output."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        text = (out or "").strip() or (err or "").strip()
        return text.splitlines()[-1] if text else ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _readline(proc, timeout):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


class FrameReceiver(_Helper):
    """The frame receiver, in ``prefix``'s namespace, writing ``out``."""

    def __init__(self, prefix, out, duration_s, port=FRAME_PORT):
        self.out = out
        super().__init__(prefix, ["frames", "--port", str(port),
                                  "--out", str(out)], duration_s)

    def records(self):
        return read_records(self.out) if os.path.exists(self.out) \
            else np.zeros(0, RECORD)


class BulkFlow:
    """A TCP flow that fills whatever link it crosses: a sink in
    ``sink_prefix``'s namespace at ``address``, a sender here (a thread)
    that writes as fast as the connection takes until :meth:`stop`."""

    def __init__(self, sink_prefix, address, duration_s, port=SINK_PORT):
        self.sink = _Helper(sink_prefix, ["sink", "--port", str(port)],
                            duration_s)
        self.sent = 0
        self._stop = threading.Event()
        try:
            self.sock = socket.create_connection((address, port), timeout=10)
        except OSError:
            self.sink.stop()
            raise
        self.sock.settimeout(0.5)
        self.thread = threading.Thread(target=self._send, daemon=True,
                                       name="rtmtb-bulk")
        self.thread.start()

    def _send(self):
        chunk = b"\xa5" * (1 << 16)
        while not self._stop.is_set():
            try:
                self.sent += self.sock.send(chunk)
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        """Stop sending; returns the bytes sent."""
        self._stop.set()
        self.thread.join(5)
        self.sock.close()
        self.sink.stop()
        return self.sent

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
