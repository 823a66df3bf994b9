"""The cap on a migration socket's unsent bytes, set on another process's
real TCP connection (loopback) as rtmig sets it on QEMU's."""

import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from rtmig_nova import planning
from rtmig_nova.enforce import reservation
from rtmig_nova.enforce import send_queue

# SIOCOUTQNSD: bytes in a TCP socket's write queue not yet sent.
_SIOCOUTQNSD = 0x894B

# The "QEMU": connects, then on each line of stdin writes without blocking
# until the socket takes no more and prints the bytes it holds unsent.
_WRITER = textwrap.dedent("""
    import fcntl, socket, struct, sys
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.setblocking(False)
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            while True:
                s.send(b"x" * 65536)
        except BlockingIOError:
            pass
        unsent = struct.unpack("i", fcntl.ioctl(s, %d, b"\\0" * 4))[0]
        print(unsent, flush=True)
""" % _SIOCOUTQNSD)


@pytest.fixture
def writer():
    """(process, its peer's port) of a connected writer whose peer (this
    test) never reads."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    conn = None
    try:
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        assert proc.stdout.readline().strip() == "ready"
        yield proc, port
    finally:
        proc.kill()
        proc.wait()
        if conn is not None:
            conn.close()
        listener.close()


def _unsent_after_writing(proc):
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return int(proc.stdout.readline())


def test_the_cap_is_read_set_and_given_back(writer):
    proc, port = writer
    sockets = send_queue.read_caps(proc.pid, "127.0.0.1", [port, port])
    assert len(sockets) == 1
    fd, inode, cap, pacing = sockets[0]
    assert (cap, pacing) == (send_queue.UNSET, send_queue.UNLIMITED_PACING)
    assert send_queue.set_caps(proc.pid, sockets, 32768) == 1
    assert send_queue.read_caps(proc.pid, "127.0.0.1", [port, port]) == [
        [fd, inode, 32768, pacing]]
    assert send_queue.set_caps(proc.pid, sockets, 32768, 5e6) == 1
    assert send_queue.read_caps(proc.pid, "127.0.0.1", [port, port]) == [
        [fd, inode, 32768, 5000000]]
    assert send_queue.set_caps(proc.pid, sockets) == 1
    assert send_queue.read_caps(proc.pid, "127.0.0.1", [port, port]) == [
        [fd, inode, cap, pacing]]
    # other ports, or another peer, are not the migration's
    assert send_queue.read_caps(proc.pid, "127.0.0.1",
                                [port + 1, port + 1]) == []
    assert send_queue.read_caps(proc.pid, "127.0.0.2", [port, port]) == []


def test_the_cap_bounds_what_a_stalled_socket_holds_unsent(writer):
    proc, port = writer
    uncapped = _unsent_after_writing(proc)
    cap = 32768
    sockets = send_queue.read_caps(proc.pid, "127.0.0.1", [port, port])
    send_queue.set_caps(proc.pid, sockets, cap)
    # what was queued before stays; nothing more is taken past the cap
    assert _unsent_after_writing(proc) == uncapped
    assert uncapped > planning.send_backlog(cap)


def test_a_capped_socket_takes_no_more_than_the_bound(writer):
    proc, port = writer
    cap = 32768
    sockets = send_queue.read_caps(proc.pid, "127.0.0.1", [port, port])
    send_queue.set_caps(proc.pid, sockets, cap)
    unsent = _unsent_after_writing(proc)
    assert 0 < unsent <= planning.send_backlog(cap)


def test_a_reused_descriptor_is_left_alone(writer):
    proc, port = writer
    [[fd, inode, before, pacing]] = send_queue.read_caps(
        proc.pid, "127.0.0.1", [port, port])
    assert send_queue.set_caps(proc.pid, [[fd, inode + 1, before, pacing]],
                               32768) == 0
    assert send_queue.read_caps(proc.pid, "127.0.0.1", [port, port])[0][2] \
        == before


def test_a_process_gone_has_nothing_to_restore(writer):
    proc, port = writer
    sockets = send_queue.read_caps(proc.pid, "127.0.0.1", [port, port])
    proc.kill()
    proc.wait()
    assert send_queue.set_caps(proc.pid, sockets) == 0


def test_reading_the_sockets_of_a_process_gone_says_so(writer, tmp_path):
    proc, port = writer
    proc.kill()
    proc.wait()
    with pytest.raises(send_queue.SendQueueError, match="is gone"):
        send_queue.read_caps(proc.pid, "127.0.0.1", [port, port])
    res = reservation.Reservation(
        [reservation.SendQueueStep(proc.pid, "127.0.0.1", (port, port),
                                   32768)], str(tmp_path))
    with pytest.raises(reservation.ReservationError,
                       match=f"process {proc.pid} is gone"):
        res.apply()
    assert os.listdir(tmp_path) == []


def test_the_reservation_step_caps_and_releases(writer, tmp_path):
    proc, port = writer
    res = reservation.Reservation(
        [reservation.SendQueueStep(proc.pid, "127.0.0.1", (port, port),
                                   32768, 4e6)], str(tmp_path))
    res.apply()
    assert send_queue.read_caps(proc.pid, "127.0.0.1",
                                [port, port])[0][2:] == [32768, 4000000]
    reservation.release(res.ident, str(tmp_path))
    assert send_queue.read_caps(proc.pid, "127.0.0.1", [port, port])[0][
        2:] == [send_queue.UNSET, send_queue.UNLIMITED_PACING]
    assert os.listdir(tmp_path) == []


def test_no_connection_yet_refuses_the_step(writer, tmp_path):
    proc, port = writer
    res = reservation.Reservation(
        [reservation.SendQueueStep(proc.pid, "127.0.0.1",
                                   (port + 1, port + 1), 32768)],
        str(tmp_path))
    with pytest.raises(reservation.ReservationError, match="no connection"):
        res.apply()


@pytest.mark.parametrize("cap", [0, send_queue.MAX_CAP + 1, 2.5e4, True,
                                 "64k"])
def test_a_cap_out_of_bounds_is_refused(cap):
    with pytest.raises(ValueError, match="unsent-bytes cap"):
        send_queue.check_cap(cap)


@pytest.mark.parametrize("rate", [0, send_queue.UNLIMITED_PACING,
                                  float("nan"), float("inf"), True, "1M"])
def test_a_pacing_rate_out_of_bounds_is_refused(rate):
    with pytest.raises(ValueError, match="pacing rate"):
        send_queue.check_pacing(rate)


# A writer that sends as fast as its socket takes for a second on each
# line of stdin and prints the bytes it sent; its peer reads everything.
_PACED_WRITER = textwrap.dedent("""
    import socket, sys, time
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    print("ready", flush=True)
    chunk = b"x" * 65536
    for line in sys.stdin:
        sent, end = 0, time.monotonic() + 1.0
        while time.monotonic() < end:
            sent += s.send(chunk)
        print(sent, flush=True)
""")


def test_a_paced_socket_sends_at_its_rate():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", _PACED_WRITER,
                             str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    stop = threading.Event()
    try:
        conn, _ = listener.accept()

        def drain():
            while not stop.is_set() and conn.recv(1 << 20):
                pass
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        assert proc.stdout.readline().strip() == "ready"
        sockets = send_queue.read_caps(proc.pid, "127.0.0.1", [port, port])
        send_queue.set_caps(proc.pid, sockets, 65536, 4e6)
        rates = []
        for _ in range(2):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            rates.append(int(proc.stdout.readline()))
        # the second second is the steady one: 4 MB/s, give or take the
        # capped queue and a segment
        assert 3.2e6 <= rates[1] <= 4.4e6, rates
    finally:
        stop.set()
        proc.kill()
        proc.wait()
        listener.close()
