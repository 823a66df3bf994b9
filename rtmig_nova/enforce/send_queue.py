"""A cap on the bytes a running migration's socket holds unsent.

QEMU counts a byte as sent once it is in its outgoing socket, and on a
link shaped to the migration's rate that socket's send buffer fills (Linux
autotunes it; 350-725 kB were measured on the testbed at 7 MiB/s).  The
switch-over test (pending <= measured bandwidth x downtime-limit) then
passes with the socket's backlog still to cross the link, and the guest's
downtime grows by backlog / link rate beyond what the limit accounts for:
about 100 ms on the testbed.

``TCP_NOTSENT_LOWAT`` on the socket bounds the unsent part: a blocking
write waits while that many bytes or more are unsent.  What TCP has sent
but the link has not queues in the migration's HTB class, as deep as the
congestion window (up to 390 kB measured there): ``SO_MAX_PACING_RATE``
at the class's payload rate makes TCP pace its segments out at the rate
the class lets through, so they do not queue (a shallower queue would
drop them, and TCP stalls on local drops).  QEMU sets neither, so they
are set from outside: ``pidfd_getfd(2)`` (Linux 5.6) duplicates QEMU's
descriptor (it needs ``CAP_SYS_PTRACE``), and an option set on the
duplicate is the socket's.  The planner counts what a capped, paced
socket can hold in the downtime (:func:`rtmig_nova.planning.send_backlog`).
"""

import ctypes
import errno
import ipaddress
import os
import socket
import struct

from rtmig_nova import bounds
from rtmig_nova.enforce import privileged

# A socket's value when nothing set it: the network namespace's
# net.ipv4.tcp_notsent_lowat applies (by default no cap).
UNSET = 0
# SO_MAX_PACING_RATE's "unlimited" (~0U), as it reads back.
UNLIMITED_PACING = 2**32 - 1
# Least and largest cap set, bytes (0 is no cap: nothing to set).
MIN_CAP = 1
MAX_CAP = int(bounds.SEND_QUEUE_CAP.high)
_SYS_PIDFD_GETFD = 438      # the same number on every architecture
_TCP_ESTABLISHED = "01"


class SendQueueError(RuntimeError):
    """The socket could not be found or changed; the message is one line."""


def check_pacing(rate):
    """``rate`` (bytes/s) as an int, or ValueError."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or \
            not 1 <= rate < UNLIMITED_PACING:
        raise ValueError(f"pacing rate must be from 1 to "
                         f"{UNLIMITED_PACING - 1} bytes/s, got {rate!r}")
    return int(rate)


def check_cap(cap):
    """``cap`` (bytes) as an int, or ValueError."""
    if isinstance(cap, bool) or not isinstance(cap, int) or \
            not MIN_CAP <= cap <= MAX_CAP:
        raise ValueError(f"unsent-bytes cap must be a whole number of bytes "
                         f"from {MIN_CAP} to {MAX_CAP}, got {cap!r}")
    return cap


def _addr(hex_addr):
    """An address of /proc/net/tcp{,6} (host-order 32-bit words, hex)."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    return getattr(ip, "ipv4_mapped", None) or ip


def connections(pid):
    """(inode, peer address, peer port) of every established TCP
    connection in the network namespace of process ``pid``;
    ProcessLookupError if there is no such process."""
    out = []
    tables = 0
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{int(pid)}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue            # (tcp6: IPv6 is off)
        tables += 1
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != _TCP_ESTABLISHED:
                continue
            host, port = cols[2].rsplit(":", 1)
            out.append((int(cols[9]), _addr(host), int(port, 16)))
    if not tables:
        raise ProcessLookupError(errno.ESRCH, f"process {pid} is gone")
    return out


def socket_fds(pid, peer, ports):
    """{fd: inode} of the descriptors of process ``pid`` that are TCP
    connections to ``peer`` (an address; None: any) at a port in
    ``ports`` = (lo, hi): a migration's outgoing stream."""
    peer = None if peer is None else ipaddress.ip_address(peer)
    lo, hi = ports
    wanted = {inode for inode, addr, port in connections(pid)
              if peer in (None, addr) and lo <= port <= hi}
    fds = {}
    base = f"/proc/{int(pid)}/fd"
    for name in os.listdir(base):
        try:
            link = os.readlink(f"{base}/{name}")
        except OSError:
            continue            # closed meanwhile
        if link.startswith("socket:[") and int(link[8:-1]) in wanted:
            fds[int(name)] = int(link[8:-1])
    return fds


_libc = None


def _syscall(*args):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.syscall(*args)


def _dup_from(pid, fd):
    """A descriptor of ours for process ``pid``'s ``fd``."""
    pidfd = os.pidfd_open(pid)
    try:
        got = _syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd({pid}, {fd}): "
                               f"{os.strerror(err)}")
        return got
    finally:
        os.close(pidfd)


# The two options, by the name a record gives their previous values in:
# TCP_NOTSENT_LOWAT (bytes), SO_MAX_PACING_RATE (bytes/s of payload; ~0:
# unlimited, read back as a 32-bit value).
_OPTIONS = (("cap", socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT),
            ("pacing", socket.SOL_SOCKET, 47))      # SO_MAX_PACING_RATE


def _swap(pid, fd, inode, values):
    """Set the :data:`_OPTIONS` of ``pid``'s ``fd`` (if it is still socket
    ``inode``) named in ``values`` ({name: value}; the others left);
    the previous values of both, [cap, pacing], or None if it is no
    longer that socket."""
    mine = _dup_from(pid, fd)
    sock = socket.socket(fileno=mine)
    try:
        if os.fstat(mine).st_ino != inode:
            return None         # the descriptor was reused
        # both are the kernel's unsigned ints: read and set as such
        before = [struct.unpack("I", sock.getsockopt(level, opt, 4))[0]
                  for _, level, opt in _OPTIONS]
        for name, level, opt in _OPTIONS:
            if values.get(name) is not None:
                sock.setsockopt(level, opt,
                                struct.pack("I", int(values[name])))
        return before
    finally:
        sock.detach()
        os.close(mine)


@privileged.sys_admin_pctxt.entrypoint
def read_caps(pid, peer, ports):
    """Privileged: [[fd, inode, unsent-bytes cap, pacing rate], ...] of
    every TCP connection of process ``pid`` to ``peer`` (None: any
    address) at ports ``ports`` = (lo, hi): empty while there is none."""
    out = []
    try:
        for fd, inode in sorted(socket_fds(pid, peer, ports).items()):
            values = _swap(pid, fd, inode, {})
            if values is not None:
                out.append([fd, inode] + values)
    except OSError as e:
        raise SendQueueError(f"reading the migration socket of process "
                             f"{pid}: {e}") from None
    return out


@privileged.sys_admin_pctxt.entrypoint
def set_caps(pid, sockets, cap=None, pacing=None):
    """Privileged: on the ``sockets`` of process ``pid`` (as
    :func:`read_caps` lists them), cap the unsent bytes at ``cap`` and
    the send rate at ``pacing`` bytes/s of payload (TCP paces its
    segments out at it); with neither, put back the values listed.  Only
    where the descriptor still holds the same socket; a socket gone has
    nothing to set.  Returns how many were set."""
    if cap is not None:
        check_cap(cap)
    if pacing is not None:
        check_pacing(pacing)
    count = 0
    for fd, inode, *before in sockets:
        values = dict(cap=cap, pacing=pacing) if cap or pacing else \
            dict(zip(("cap", "pacing"), before))
        try:
            if _swap(pid, int(fd), int(inode), values) is not None:
                count += 1
        except FileNotFoundError:
            continue            # the process ended
        except OSError as e:
            if e.errno in (errno.EBADF, errno.ESRCH):
                continue        # the descriptor or the process is gone
            raise SendQueueError(f"setting the send options of process "
                                 f"{pid}'s fd {fd}: {e}") from None
    return count
