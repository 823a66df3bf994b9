"""A cap on the bytes a running migration's socket holds unsent.

QEMU counts a byte as sent once it is in its outgoing socket, and on a
link shaped to the migration's rate that socket's send buffer fills (Linux
autotunes it; 350-725 kB were measured on the testbed at 7 MiB/s).  The
switch-over test (pending <= measured bandwidth x downtime-limit) then
passes with the socket's backlog still to cross the link, and the guest's
downtime grows by backlog / link rate beyond what the limit accounts for:
about 100 ms on the testbed.

``TCP_NOTSENT_LOWAT`` on the socket bounds the unsent part: a blocking
write waits while that many bytes or more are unsent.  QEMU does not set
it, so it is set from outside: ``pidfd_getfd(2)`` (Linux 5.6) duplicates
QEMU's descriptor (it needs ``CAP_SYS_PTRACE``), and an option set on the
duplicate is the socket's.  The planner counts what a capped socket can
hold in the downtime (:func:`rtmig_nova.planning.send_backlog`).
"""

import ctypes
import errno
import ipaddress
import os
import socket

from rtmig_nova import bounds
from rtmig_nova.enforce import privileged

# A socket's value when nothing set it: the network namespace's
# net.ipv4.tcp_notsent_lowat applies (by default no cap).
UNSET = 0
# Least and largest cap set, bytes (0 is no cap: nothing to set).
MIN_CAP = 1
MAX_CAP = int(bounds.SEND_QUEUE_CAP.high)
_SYS_PIDFD_GETFD = 438      # the same number on every architecture
_TCP_ESTABLISHED = "01"


class SendQueueError(RuntimeError):
    """The socket could not be found or changed; the message is one line."""


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
    connection in the network namespace of process ``pid``."""
    out = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{int(pid)}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != _TCP_ESTABLISHED:
                continue
            host, port = cols[2].rsplit(":", 1)
            out.append((int(cols[9]), _addr(host), int(port, 16)))
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


def _dup_from(pid, fd):
    """A descriptor of ours for process ``pid``'s ``fd``."""
    pidfd = os.pidfd_open(pid)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        got = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd({pid}, {fd}): "
                               f"{os.strerror(err)}")
        return got
    finally:
        os.close(pidfd)


def _swap_lowat(pid, fd, inode, value):
    """Set TCP_NOTSENT_LOWAT of ``pid``'s ``fd`` (if it is still socket
    ``inode``) to ``value`` (None: leave it); the previous value, or None
    if it is no longer that socket."""
    mine = _dup_from(pid, fd)
    sock = socket.socket(fileno=mine)
    try:
        if os.fstat(mine).st_ino != inode:
            return None         # the descriptor was reused
        before = sock.getsockopt(socket.IPPROTO_TCP,
                                 socket.TCP_NOTSENT_LOWAT)
        if value is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT,
                            value)
        return before
    finally:
        sock.detach()
        os.close(mine)


@privileged.sys_admin_pctxt.entrypoint
def read_caps(pid, peer, ports):
    """Privileged: [[fd, inode, unsent-bytes cap], ...] of every TCP
    connection of process ``pid`` to ``peer`` (None: any address) at ports
    ``ports`` = (lo, hi): empty while there is none."""
    out = []
    try:
        for fd, inode in sorted(socket_fds(pid, peer, ports).items()):
            value = _swap_lowat(pid, fd, inode, None)
            if value is not None:
                out.append([fd, inode, value])
    except OSError as e:
        raise SendQueueError(f"reading the migration socket of process "
                             f"{pid}: {e}") from None
    return out


@privileged.sys_admin_pctxt.entrypoint
def set_caps(pid, sockets, cap=None):
    """Privileged: set the unsent-bytes cap of the ``sockets`` of process
    ``pid`` (as :func:`read_caps` lists them) to ``cap`` bytes, or, with
    None, back to the value listed, where the descriptor still holds the
    same socket.  A socket gone has nothing to set: returns how many were
    set."""
    count = 0
    for fd, inode, before in sockets:
        value = int(before) if cap is None else check_cap(cap)
        try:
            if _swap_lowat(pid, int(fd), int(inode), value) is not None:
                count += 1
        except FileNotFoundError:
            continue            # the process ended
        except OSError as e:
            if e.errno in (errno.EBADF, errno.ESRCH):
                continue        # the descriptor or the process is gone
            raise SendQueueError(f"setting the unsent-bytes cap of process "
                                 f"{pid}'s fd {fd}: {e}") from None
    return count
