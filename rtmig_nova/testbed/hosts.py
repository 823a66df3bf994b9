"""Two libvirt hosts on one machine, between which live migration works.

Test tooling for the real testbed (issue 3), run as root:

* host A is the root namespace's own libvirtd (``qemu:///system``); the
  testbed never changes it beyond creating and destroying domains whose
  name starts with :data:`DOMAIN_PREFIX`;
* host B is a second ``virtlogd`` + ``libvirtd`` in its own network, mount,
  UTS and cgroup namespaces, with its own ``/run`` (tmpfs), its own
  ``/var/lib/libvirt``, ``/var/cache/libvirt``, ``/var/log/libvirt`` and
  ``/etc/libvirt`` (bind mounts of directories under the work dir), its own
  host name and host UUID, listening on ``qemu+tcp://10.77.0.2/system``;
* a veth pair joins them: ``rtmtb-a`` 10.77.0.1/24 in the root namespace,
  ``rtmtb-b`` 10.77.0.2/24 in the namespace ``rtmtb-ns``.  Its rate can be
  shaped with an HTB qdisc on both ends (set with the ``tc`` command).
* with ``lan=True``, one Ethernet segment for guests and a client: each
  end of the veth is a port of a bridge ``rtmtb-br`` (which then holds the
  host's address), a guest's virtio-net interface joins the bridge of the
  host it runs on (:meth:`Testbed.start_guest` ``address=``), and a third
  namespace ``rtmtb-cl`` holds a client at 10.77.0.3 behind host B's
  bridge.  Traffic from a guest on A to the client crosses the veth, and
  so its shaping, like the migration; after the migration it stays on B.
  QEMU's announce after the switch-over teaches the bridges where the
  guest's MAC now is.

B's cgroups: ``ip netns exec`` remounts ``/sys``, which hides the cgroup
hierarchies, so a libvirtd started that way runs its domains without
cgroups.  Host B instead starts in a cgroup ``rtmtb-hostb`` (a child of the
caller's own cgroup in every hierarchy), unshares a cgroup namespace rooted
there and mounts the hierarchies again: B's domains get real cgroups
(``.../rtmtb-hostb/machine/qemu-N-NAME.libvirt-qemu``) that cannot collide
with host A's ``/machine/qemu-N-NAME.libvirt-qemu``, and ``schedinfo`` and
friends work on B as on a real host.  Pass ``cgroups=False`` to :func:`up`
for B without cgroups.

Usage::

    bed = up("/var/tmp/rtmtb")          # removes leftovers of a crashed run
    try:
        conn_a.createXML(xml_of_a_domain_named_rtmtb_something, 0)
        stats = bed.migrate("rtmtb-x", bandwidth_bytes_per_s=32 << 20,
                            downtime_limit_s=0.05)
    finally:
        bed.down()                      # or down(workdir); idempotent

One testbed per machine (fixed names and addresses): up() takes a lock
that down() releases, so concurrent test runs take turns.

Tested on cgroup v1 (with a v2 hierarchy beside it); on a pure cgroup v2
host B's cgroups may need ``cgroups=False``.

libvirt is imported lazily, inside the functions that use it.
"""

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid
import warnings

NETNS = "rtmtb-ns"
VETH_A = "rtmtb-a"
VETH_B = "rtmtb-b"
IP_A = "10.77.0.1"
IP_B = "10.77.0.2"
PREFIXLEN = 24
URI_A = "qemu:///system"
URI_B = "qemu+tcp://%s/system" % IP_B
MIGRATE_URI = "tcp://%s" % IP_B
BRIDGE = "rtmtb-br"             # lan=True: on A and in B's namespace
CLIENT_NETNS = "rtmtb-cl"
VETH_C = "rtmtb-c"              # in B's namespace, a port of B's bridge
VETH_CLIENT = "rtmtb-cc"        # in the client's namespace
IP_CLIENT = "10.77.0.3"
GUEST_IPS = ["10.77.0.%d" % i for i in range(16, 64)]
# Locally administered unicast MACs for guests, 52:54:00 as libvirt's own
GUEST_MAC_PREFIX = "52:54:00:77"
LIBVIRTD_TCP_PORT = 16509
DOMAIN_PREFIX = "rtmtb-"
HOSTNAME_B = "rtmtb-hostb"
CGROUP_NAME = "rtmtb-hostb"
SUBDIR = "rtmtb-hostb"          # host B's files, under the work dir
MIB = 1 << 20
CONTROL_RATE = "10gbit"         # libvirt RPC's class when shaped
# One testbed per machine (its names and addresses are fixed): up() takes
# this lock and down() gives it back; another process waits for it.
LOCK_PATH = "/run/lock/rtmtb-testbed.lock"

# Directories host B gets a private copy of (bind mounts), by role.
_PRIVATE_DIRS = {
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
    "etc": "/etc/libvirt",
}
# A work dir in one of these would be hidden from host B by its mounts.
_HIDDEN_IN_B = ("/run", "/var/run", "/sys") + tuple(_PRIVATE_DIRS.values())

_PROCESS_NAMES = ("libvirtd", "virtlogd")


class TestbedError(Exception):
    """Setting up, using or tearing down the testbed failed."""


class MigrationTimeout(TestbedError):
    """The migration did not finish in time and was aborted.

    ``stats`` holds the last progress sample of the source's job (the same
    keys as :meth:`Testbed.migrate` returns, from the running job; there
    ``downtime_s`` is QEMU's expected downtime, ``total_time_s`` the time
    so far)."""

    def __init__(self, message, stats=None):
        super().__init__(message)
        self.stats = stats or {}


# --------------------------------------------------------------- helpers

def _run(argv, timeout=15, check=True):
    try:
        res = subprocess.run(argv, capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise TestbedError("timed out after %ss: %s"
                           % (timeout, shlex.join(argv))) from exc
    if check and res.returncode != 0:
        raise TestbedError("%s failed (%d): %s" % (
            shlex.join(argv), res.returncode,
            (res.stderr or res.stdout).strip()))
    return res


def _in_b(*argv):
    return ["ip", "netns", "exec", NETNS] + list(argv)


def in_client(*argv):
    """``argv`` run in the client's namespace (``lan=True``)."""
    return ["ip", "netns", "exec", CLIENT_NETNS] + list(argv)


# Seconds a single libvirt call of the testbed may take before it is given up
# (libvirt itself waits 30 s at most for a domain's job lock).
CALL_TIMEOUT = 35.0


def _bounded(fn, timeout):
    """Run ``fn()`` in a daemon thread, give up after ``timeout`` s (the
    thread is abandoned: used for libvirt calls to a daemon that may
    hang)."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:   # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError("no answer within %ss" % timeout)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _netns_exists(name=NETNS):
    return os.path.exists(os.path.join("/run/netns", name))


def _link_exists(name):
    return os.path.exists(os.path.join("/sys/class/net", name))


def _ns_inode(pid, kind="net"):
    try:
        return os.stat("/proc/%s/ns/%s" % (pid, kind)).st_ino
    except OSError:
        return None


def _alive(pid):
    """True for a live process (zombies count as dead)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _port_open(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _daemon_running(name):
    return _run(["pgrep", "-x", name], check=False).returncode == 0


def _quiet_libvirt():
    """Keep libvirt's C library from printing every error to stderr (they
    arrive as exceptions anyway).  Applies to the whole process."""
    import libvirt
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


# --------------------------------------------------------------- cgroups

def _cgroup_mounts():
    """[(mountpoint, fstype, options, controllers)] of this mount
    namespace's cgroup hierarchies, plus the tmpfs they live on (if any)
    as the first row with controllers None."""
    rows = []
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype, opts = line.split()[:4]
            mnt = mnt.replace("\\040", " ")
            if fstype == "cgroup":
                ctrls = frozenset(o for o in opts.split(",")
                                  if o not in _MOUNT_FLAGS)
                rows.append((mnt, fstype, opts, ctrls))
            elif fstype == "cgroup2":
                rows.append((mnt, fstype, opts, frozenset()))
            elif fstype == "tmpfs" and mnt == "/sys/fs/cgroup":
                rows.insert(0, (mnt, fstype, opts, None))
    return rows


_MOUNT_FLAGS = frozenset(("rw", "ro", "relatime", "noatime", "nosuid",
                          "nodev", "noexec", "clone_children", "xattr",
                          "nsdelegate", "memory_recursiveprot",
                          "memory_localevents", "favordynmods"))


def _own_placement():
    """{controllers frozenset: path} of this process (v2: empty set)."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            out[frozenset(c for c in ctrls.split(",") if c)] = path
    return out


def _cgroup_roots():
    """Existing ``rtmtb-hostb`` cgroup directories (any depth up to 4 below
    each hierarchy's mount point: B's is a child of its starter's
    cgroup)."""
    found = []
    for mnt, fstype, _, _ in _cgroup_mounts():
        if fstype == "tmpfs":
            continue
        level = [mnt]
        for _ in range(4):
            nxt = []
            for d in level:
                try:
                    with os.scandir(d) as it:
                        for e in it:
                            if e.is_dir(follow_symlinks=False):
                                if e.name == CGROUP_NAME:
                                    found.append(e.path)
                                else:
                                    nxt.append(e.path)
                except OSError:
                    pass
            level = nxt
    return found


def _cgroup_pids(roots):
    pids = set()
    for root in roots:
        for d, _, _ in os.walk(root):
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids.update(int(x) for x in f.read().split())
            except (OSError, ValueError):
                pass
    return pids


def _remove_cgroups(roots, errors, timeout=5.0):
    deadline = time.monotonic() + timeout
    for root in roots:
        while os.path.isdir(root):
            dirs = [d for d, _, _ in os.walk(root)]
            failed = None
            for d in sorted(dirs, key=len, reverse=True):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    failed = exc
            if failed is None or time.monotonic() > deadline:
                if failed is not None:
                    errors.append("cgroup %s: %s" % (root, failed))
                break
            time.sleep(0.1)


def _make_cgroups(mounts):
    """Create ``rtmtb-hostb`` under this process's cgroup in every
    hierarchy; return the ``cgroup.procs`` files to join."""
    placement = _own_placement()
    procs = []
    for mnt, fstype, _, ctrls in mounts:
        if ctrls is None:
            continue
        path = placement.get(ctrls, "/")
        parent = os.path.join(mnt, path.lstrip("/"))
        d = os.path.join(parent, CGROUP_NAME)
        os.makedirs(d, exist_ok=True)
        if "cpuset" in ctrls:
            # A v1 cpuset starts empty: no task may join it then.
            for key in ("cpuset.cpus", "cpuset.mems"):
                with open(os.path.join(d, key)) as f:
                    if f.read().strip():
                        continue
                with open(os.path.join(parent, key)) as f:
                    value = f.read().strip()
                with open(os.path.join(d, key), "w") as f:
                    f.write(value)
        procs.append(os.path.join(d, "cgroup.procs"))
    return procs


# --------------------------------------------------------------- configs

def _format_value(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return '"%s"' % value


def _set_keys(path, values):
    """Comment out active settings of ``values``' keys in a libvirt config
    file and append the new ones."""
    with open(path) as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip() if "=" in line else None
        if key in values and not line.lstrip().startswith("#"):
            line = "# (rtmtb) " + line
        out.append(line)
    out.append("")
    out.append("# Host B of the rtmig-nova testbed (rtmig_nova.testbed.hosts)")
    out.extend("%s = %s" % (k, _format_value(v)) for k, v in values.items())
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def _mirror_dir(src, dst):
    """Create ``dst`` with the mode and owner of ``src`` (not contents)."""
    st = os.stat(src)
    os.makedirs(dst, exist_ok=True)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.chown(dst, st.st_uid, st.st_gid)


def _prepare_files(dir_b, lib_subdirs):
    if os.path.isdir(dir_b):
        shutil.rmtree(dir_b)
    os.makedirs(dir_b)
    os.chmod(dir_b, 0o755)
    etc = os.path.join(dir_b, "etc")
    shutil.copytree("/etc/libvirt", etc, symlinks=True)
    # No domain, network or pool of host A's may come up on host B.
    for sub in ("qemu", "lxc", "libxl"):
        d = os.path.join(etc, sub)
        if os.path.isdir(d):
            for name in os.listdir(d):
                if name.endswith(".xml"):
                    os.unlink(os.path.join(d, name))
    for auto in ("qemu/autostart", "qemu/networks/autostart",
                 "storage/autostart", "nodedev/autostart"):
        d = os.path.join(etc, auto)
        if os.path.isdir(d):
            for name in os.listdir(d):
                os.unlink(os.path.join(d, name))
    _set_keys(os.path.join(etc, "libvirtd.conf"), {
        "listen_tcp": 1,
        "listen_tls": 0,
        "listen_addr": IP_B,
        "auth_tcp": "none",
        "host_uuid": str(uuid.uuid4()),
        "log_outputs": "3:file:%s" % os.path.join(dir_b, "libvirtd.log"),
    })
    _set_keys(os.path.join(etc, "virtlogd.conf"), {
        "log_outputs": "3:file:%s" % os.path.join(dir_b, "virtlogd.log"),
    })
    _set_keys(os.path.join(etc, "qemu.conf"), {
        # Incoming migrations listen on B's test address only, and B
        # names that address when no migration URI is given.
        "migration_address": IP_B,
        "migration_host": IP_B,
    })
    for role in ("lib", "cache", "log"):
        src = _PRIVATE_DIRS[role]
        dst = os.path.join(dir_b, role)
        _mirror_dir(src, dst)
        for sub in lib_subdirs.get(role, ()):
            if os.path.isdir(os.path.join(src, sub)):
                _mirror_dir(os.path.join(src, sub), os.path.join(dst, sub))
    # Same machine, same QEMU: start from host A's QEMU capability cache
    # (libvirt re-validates every entry; an empty cache costs B ~8 s of
    # probing on its first connection).
    caps = os.path.join(_PRIVATE_DIRS["cache"], "qemu", "capabilities")
    if os.path.isdir(caps):
        dst = os.path.join(dir_b, "cache", "qemu", "capabilities")
        _mirror_dir(os.path.dirname(caps), os.path.dirname(dst))
        shutil.copytree(caps, dst, symlinks=True)
    with open(os.path.join(dir_b, "hosts"), "w") as f:
        f.write("127.0.0.1\tlocalhost\n%s\t%s\n" % (IP_B, HOSTNAME_B))


def _start_script(dir_b, mounts):
    q = shlex.quote
    lines = ["set -e", "hostname %s" % HOSTNAME_B,
             "mount -t tmpfs -o mode=0755 rtmtb-run /run",
             "mkdir -p /run/libvirt /run/lock"]
    for mnt, fstype, opts, _ in mounts:
        if fstype == "tmpfs":
            lines.append("mount -t tmpfs -o %s rtmtb-cgroup %s"
                         % (q(opts), q(mnt)))
        else:
            lines.append("mkdir -p %s" % q(mnt))
            lines.append("mount -t %s -o %s %s %s"
                         % (fstype, q(opts), fstype, q(mnt)))
    for role, target in _PRIVATE_DIRS.items():
        lines.append("mount --bind %s %s"
                     % (q(os.path.join(dir_b, role)), q(target)))
    # B's own name resolves (libvirt looks it up) without DNS.
    lines.append("mount --bind %s /etc/hosts"
                 % q(os.path.join(dir_b, "hosts")))
    lines.append("virtlogd -d -f %s -p %s" % (
        q(os.path.join(dir_b, "etc", "virtlogd.conf")),
        q(os.path.join(dir_b, "virtlogd.pid"))))
    lines.append("libvirtd -d --listen -f %s -p %s" % (
        q(os.path.join(dir_b, "etc", "libvirtd.conf")),
        q(os.path.join(dir_b, "libvirtd.pid"))))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------- lock

_lock = {"fd": None}


def _acquire(timeout):
    """Take the machine-wide testbed lock (re-entrant in this process)."""
    if _lock["fd"] is not None:
        return False
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise TestbedError("another process holds the testbed "
                                   "(%s) for more than %ss"
                                   % (LOCK_PATH, timeout)) from None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.write(fd, b"%d\n" % os.getpid())
    _lock["fd"] = fd
    return True


def _release():
    fd, _lock["fd"] = _lock["fd"], None
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def locked(timeout=120):
    """Hold the testbed lock for a while (e.g. to look at the machine
    without another process's testbed coming or going); a no-op if this
    process holds it already.  Do not call up() or down() inside."""
    took = _acquire(timeout)
    try:
        yield
    finally:
        if took:
            _release()


# --------------------------------------------------------------- cleanup

def _destroy_domains(uri, errors, timeout=20.0):
    """Destroy (and undefine) every domain on ``uri`` whose name starts with
    DOMAIN_PREFIX; connection failures mean there is nothing to do."""
    libvirt = _quiet_libvirt()

    def work():
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError:
            return
        try:
            for dom in conn.listAllDomains():
                name = dom.name()
                if not name.startswith(DOMAIN_PREFIX):
                    continue
                try:
                    persistent = dom.isPersistent()
                    if dom.isActive():
                        dom.destroy()       # a transient one is gone now
                    if persistent:
                        dom.undefine()
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        errors.append("%s on %s: %s" % (name, uri, exc))
        finally:
            conn.close()

    try:
        _bounded(work, timeout)
    except TimeoutError as exc:
        errors.append("destroying domains on %s: %s" % (uri, exc))


def _pidfile_pids(workdir):
    pids = set()
    if not workdir:
        return pids
    dir_b = os.path.join(os.path.abspath(workdir), SUBDIR)
    for name in _PROCESS_NAMES:
        path = os.path.join(dir_b, name + ".pid")
        try:
            with open(path) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        # Only if it still is that daemon (pids get reused).
        if dir_b in _cmdline(pid):
            pids.add(pid)
    return pids


def host_b_pids(workdir=None):
    """Pids of host B's processes (daemons, QEMU, helpers): those in its
    network namespace, in its cgroups, or named by its pid files; never
    one in this process's own network namespace (host A's)."""
    pids = set()
    if _netns_exists():
        res = _run(["ip", "netns", "pids", NETNS], check=False)
        pids.update(int(x) for x in res.stdout.split() if x.isdigit())
    pids |= _cgroup_pids(_cgroup_roots())
    pids |= _pidfile_pids(workdir)
    own_ns = _ns_inode("self")
    return {p for p in pids
            if p != os.getpid() and _alive(p) and _ns_inode(p) != own_ns}


def _kill_host_b(workdir, errors):
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        pids = host_b_pids(workdir)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(map(_alive, pids)):
            time.sleep(0.05)
    left = host_b_pids(workdir)
    if left:
        errors.append("host B processes survive SIGKILL: %s" % sorted(left))


def _cleanup(workdir):
    """Remove every trace of a testbed; return what could not be removed."""
    errors = []
    if _daemon_running("libvirtd"):
        _destroy_domains(URI_A, errors)
    if _port_open(IP_B, LIBVIRTD_TCP_PORT):
        # Politely first; killing B's processes below is what counts.
        _destroy_domains(URI_B, [], timeout=10.0)
    _kill_host_b(workdir, errors)
    _remove_client(errors)
    if _netns_exists():
        try:
            _run(["ip", "netns", "del", NETNS])
        except TestbedError as exc:
            errors.append(str(exc))
    if _link_exists(BRIDGE):
        res = _run(["ip", "link", "del", BRIDGE], check=False)
        if res.returncode != 0 and _link_exists(BRIDGE):
            errors.append("ip link del %s: %s"
                          % (BRIDGE, res.stderr.strip()))
    if _link_exists(VETH_A):
        # Usually gone with the namespace already (asynchronously).
        res = _run(["ip", "link", "del", VETH_A], check=False)
        if res.returncode != 0 and _link_exists(VETH_A):
            errors.append("ip link del %s: %s"
                          % (VETH_A, res.stderr.strip()))
    _remove_cgroups(_cgroup_roots(), errors)
    if workdir:
        for name in _PROCESS_NAMES:
            path = os.path.join(os.path.abspath(workdir), SUBDIR,
                                name + ".pid")
            if os.path.exists(path):
                os.unlink(path)
    return errors


def leftovers(workdir=None, lock_timeout=120):
    """What of a testbed exists now (empty when everything is gone).
    Looks while holding the testbed lock, so that another process's
    testbed is not taken for a leftover."""
    with locked(lock_timeout):
        return _leftovers(workdir)


def guest_mac(address):
    """The MAC of the testbed guest at ``address`` (one of
    :data:`GUEST_IPS`): :data:`GUEST_MAC_PREFIX` and its last two bytes."""
    last = [int(x) for x in address.split(".")[2:]]
    return "%s:%02x:%02x" % (GUEST_MAC_PREFIX, last[0], last[1])


def _make_lan():
    """The bridges on A and B (the veth's ends their ports) and the
    client's namespace behind B's bridge; no addresses (the caller puts
    the hosts' on the bridges)."""
    for prefix in ([], _in_b()):
        # forward_delay 0: a port forwards at once (no STP here)
        _run(prefix + ["ip", "link", "add", BRIDGE, "type", "bridge",
                       "forward_delay", "0", "stp_state", "0"])
    _run(["ip", "link", "set", VETH_A, "master", BRIDGE])
    _run(_in_b("ip", "link", "set", VETH_B, "master", BRIDGE))
    _run(["ip", "netns", "add", CLIENT_NETNS])
    _run(_in_b("ip", "link", "add", VETH_C, "type", "veth", "peer", "name",
               VETH_CLIENT, "netns", CLIENT_NETNS))
    _run(_in_b("ip", "link", "set", VETH_C, "master", BRIDGE))
    _run(_in_b("ip", "link", "set", VETH_C, "up"))
    for prefix in ([], _in_b()):
        _run(prefix + ["ip", "link", "set", BRIDGE, "up"])
    _run(in_client("ip", "addr", "add", "%s/%d" % (IP_CLIENT, PREFIXLEN),
                   "dev", VETH_CLIENT))
    _run(in_client("ip", "link", "set", VETH_CLIENT, "up"))
    _run(in_client("ip", "link", "set", "lo", "up"))


def _remove_client(errors):
    """Kill what runs in the client's namespace, then remove it."""
    if not _netns_exists(CLIENT_NETNS):
        return
    res = _run(["ip", "netns", "pids", CLIENT_NETNS], check=False)
    for pid in res.stdout.split():
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    try:
        _run(["ip", "netns", "del", CLIENT_NETNS])
    except TestbedError as exc:
        errors.append(str(exc))


def _leftovers(workdir):
    found = []
    for ns in (NETNS, CLIENT_NETNS):
        if _netns_exists(ns):
            found.append("netns %s" % ns)
    for name in (VETH_A, BRIDGE):
        if _link_exists(name):
            found.append("link %s" % name)
    pids = host_b_pids(workdir)
    if pids:
        found.append("host B pids %s" % sorted(pids))
    roots = _cgroup_roots()
    if roots:
        found.append("cgroups %s" % roots)
    if _daemon_running("libvirtd"):
        libvirt = _quiet_libvirt()
        try:
            conn = libvirt.open(URI_A)
        except libvirt.libvirtError:
            conn = None
        if conn is not None:
            try:
                found.extend("domain %s on A" % d.name()
                             for d in conn.listAllDomains()
                             if d.name().startswith(DOMAIN_PREFIX))
            finally:
                conn.close()
    return found


# --------------------------------------------------------------- testbed

def _check_kvm():
    """Warn if /dev/kvm exists but libvirt's QEMU user cannot open it:
    libvirt then re-probes QEMU (~80 s here) on every domain start."""
    try:
        st = os.stat("/dev/kvm")
    except OSError:
        return
    import grp
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return
    if st.st_gid != kvm_gid or stat.S_IMODE(st.st_mode) & 0o060 != 0o060:
        warnings.warn("/dev/kvm is not group kvm mode 0660: every domain "
                      "start re-probes QEMU (chgrp kvm /dev/kvm; chmod 660 "
                      "/dev/kvm)", RuntimeWarning, stacklevel=3)


class Testbed:
    """Handle on a running testbed (made by :func:`up`)."""

    uri_a = URI_A
    uri_b = URI_B
    migrate_uri = MIGRATE_URI
    domain_prefix = DOMAIN_PREFIX

    def __init__(self, workdir, rate_bytes_per_s=None, cgroups=True,
                 lan=False):
        self.workdir = os.path.abspath(workdir)
        self.dir_b = os.path.join(self.workdir, SUBDIR)
        self.rate_bytes_per_s = rate_bytes_per_s
        self.cgroups = cgroups
        self.lan = lan
        self.guest_addresses = {}   # domain name -> its IPv4 address
        self.timings = {}
        self.console_logs = {}      # domain name -> its console log

    # ---------------------------------------------------------- lifecycle

    def _start(self, timeout):
        t0 = time.monotonic()
        libvirt = _quiet_libvirt()
        _check_kvm()
        if not _daemon_running("libvirtd"):
            raise TestbedError("host A's libvirtd is not running "
                               "(virtlogd -d; libvirtd -d)")
        for path in (self.workdir, os.path.realpath(self.workdir)):
            if any(path == d or path.startswith(d + "/")
                   for d in _HIDDEN_IN_B):
                raise TestbedError("work dir %s would be hidden from host B"
                                   % path)
        _prepare_files(self.dir_b, {"lib": os.listdir("/var/lib/libvirt"),
                                    "log": os.listdir("/var/log/libvirt")})
        _run(["ip", "netns", "add", NETNS])
        _run(["ip", "link", "add", VETH_A, "type", "veth",
              "peer", "name", VETH_B, "netns", NETNS])
        dev_a, dev_b = VETH_A, VETH_B
        if self.lan:
            _make_lan()
            dev_a = dev_b = BRIDGE
        _run(["ip", "addr", "add", "%s/%d" % (IP_A, PREFIXLEN),
              "dev", dev_a])
        _run(["ip", "link", "set", VETH_A, "up"])
        _run(_in_b("ip", "addr", "add", "%s/%d" % (IP_B, PREFIXLEN),
                   "dev", dev_b))
        _run(_in_b("ip", "link", "set", VETH_B, "up"))
        _run(_in_b("ip", "link", "set", "lo", "up"))
        if self.rate_bytes_per_s:
            self.shape(self.rate_bytes_per_s)
        self.timings["network_s"] = time.monotonic() - t0

        mounts = _cgroup_mounts() if self.cgroups else []
        procs = _make_cgroups(mounts) if mounts else []
        script = os.path.join(self.dir_b, "start.sh")
        with open(script, "w") as f:
            f.write(_start_script(self.dir_b, mounts))
        # The shell joins B's cgroups, then becomes ``ip netns exec`` and
        # ``unshare``: the daemons inherit all of it.
        argv = ["sh", "-c",
                'n=$1; shift; i=0; for f in "$@"; do i=$((i+1)); '
                '[ $i -le $n ] || break; echo $$ > "$f"; done; '
                'shift $n; exec "$@"',
                "sh", str(len(procs))] + procs + _in_b(
                    "unshare", "-m", "-u",
                    *(["-C"] if procs else []),
                    "--propagation", "private", "sh", script)
        t1 = time.monotonic()
        res = _run(argv, timeout=timeout, check=False)
        if res.returncode != 0:
            raise TestbedError("starting host B failed (%d): %s"
                               % (res.returncode,
                                  (res.stderr or res.stdout).strip()))
        deadline = time.monotonic() + timeout
        while not _port_open(IP_B, LIBVIRTD_TCP_PORT):
            if time.monotonic() > deadline:
                raise TestbedError("host B's libvirtd does not listen on "
                                   "%s:%d; see %s" % (
                                       IP_B, LIBVIRTD_TCP_PORT,
                                       os.path.join(self.dir_b,
                                                    "libvirtd.log")))
            time.sleep(0.05)
        conn_b = _bounded(lambda: libvirt.open(URI_B), timeout)
        conn_a = libvirt.open(URI_A)
        try:
            uuid_a = _host_uuid(conn_a)
            uuid_b = _host_uuid(conn_b)
            if uuid_a == uuid_b:
                raise TestbedError("hosts A and B share host UUID %s"
                                   % uuid_a)
            self.host_uuids = (uuid_a, uuid_b)
            self.hostname_b = conn_b.getHostname()
        finally:
            conn_a.close()
            conn_b.close()
        self.timings["host_b_s"] = time.monotonic() - t1
        self.timings["up_s"] = time.monotonic() - t0

    def down(self):
        """Remove everything of the testbed (idempotent)."""
        down(self.workdir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()

    def host_b_pids(self):
        return host_b_pids(self.workdir)

    # ---------------------------------------------------------- guests

    def start_guest(self, kernel, initrd, cmdline, memory_mib=128, vcpus=1,
                    name=None, domain_type="qemu", console_log=None,
                    address=None):
        """Start a transient testbed guest on host A booting ``kernel`` and
        ``initrd`` (paths readable by QEMU's user on both hosts) with the
        kernel command line ``cmdline`` (see
        :func:`rtmig_nova.testbed.guest.kernel_cmdline`); ``memory_mib``:
        guest RAM, MiB.  Returns its name (``DOMAIN_PREFIX`` + a random
        tail unless given), so that down() removes it whatever happens.
        ``console_log``: a file that gets the guest's serial console (on
        both hosts: give a path outside the directories host B has its own
        copy of, see :data:`_PRIVATE_DIRS`).  ``address``: an IPv4
        address of :data:`GUEST_IPS` for a guest on the LAN (a testbed
        made with ``lan=True``; ``cmdline`` must give the guest the same
        address, see :func:`~rtmig_nova.testbed.guest.kernel_cmdline`):
        the guest gets a virtio-net interface on the bridge, with a MAC
        derived from the address."""
        from rtmig_nova.testbed import guest
        name = name or DOMAIN_PREFIX + uuid.uuid4().hex[:8]
        if not name.startswith(DOMAIN_PREFIX):
            raise TestbedError("a testbed guest's name starts with %r: %r"
                               % (DOMAIN_PREFIX, name))
        bridge = mac = None
        if address is not None:
            if not self.lan:
                raise TestbedError("a guest address needs a testbed made "
                                   "with lan=True")
            if address not in GUEST_IPS:
                raise TestbedError("guest address %s is not one of the "
                                   "testbed's %s-%s" % (
                                       address, GUEST_IPS[0],
                                       GUEST_IPS[-1]))
            if address in self.guest_addresses.values():
                raise TestbedError("guest address %s is taken" % address)
            bridge, mac = BRIDGE, guest_mac(address)
        libvirt = _quiet_libvirt()
        conn = libvirt.open(URI_A)
        try:
            conn.createXML(guest.domain_xml(
                name, kernel, initrd, memory_mib, vcpus, cmdline,
                domain_type=domain_type, console_log=console_log,
                bridge=bridge, mac=mac), 0)
        except libvirt.libvirtError as exc:
            raise TestbedError("starting guest %s on host A: %s"
                               % (name, " ".join(str(exc).split())))
        finally:
            conn.close()
        if console_log is not None:
            self.console_logs[name] = console_log
        if address is not None:
            self.guest_addresses[name] = address
        return name

    def destroy_guest(self, name):
        """Destroy the guest ``name`` wherever it runs (A or B) and forget
        it: its LAN address can be given to another guest."""
        for uri in (URI_A, URI_B):
            destroy_domain(uri, name)
        self.guest_addresses.pop(name, None)
        self.console_logs.pop(name, None)

    # ---------------------------------------------------------- shaping

    def shape(self, rate_bytes_per_s, ends=("a", "b")):
        """Limit the veth to ``rate_bytes_per_s`` (bytes/s) in each
        direction, set with ``tc``: an HTB root on both ends whose default
        class 1:10 has that rate; libvirt's own RPC (TCP port 16509) goes
        to an unshaped class 1:20, so that migration control, job aborts
        and the final handshake do not queue behind migration data.

        Keep QEMU's own bandwidth cap (``migrate(bandwidth_bytes_per_s=)``)
        below this rate: otherwise QEMU writes into the TCP send buffer
        (up to net.ipv4.tcp_wmem's 4 MiB) faster than the link drains it,
        believes it is nearly done, stops the guest and then waits for
        the buffer to drain -- seen: 1.3 s (400 kB/s link, 1 MiB/s cap)
        and 3 s (200 kB/s link, no cap) of downtime against a 50 ms
        limit, 62 ms with a 4 MB/s link and a 2 MiB/s cap.

        ``ends``: the ends to shape, ``"a"`` (A's egress) and/or ``"b"``
        (B's); the others are left as they are."""
        rate = "%dbit" % max(8, int(rate_bytes_per_s * 8))
        for prefix, dev in self._ends(ends):
            tc = prefix + ["tc"]
            _run(tc + ["qdisc", "del", "dev", dev, "root"], check=False)
            _run(tc + ["qdisc", "add", "dev", dev, "root", "handle", "1:",
                       "htb", "default", "10"])
            _run(tc + ["class", "add", "dev", dev, "parent", "1:",
                       "classid", "1:10", "htb", "rate", rate,
                       "ceil", rate])
            _run(tc + ["class", "add", "dev", dev, "parent", "1:",
                       "classid", "1:20", "htb", "rate", CONTROL_RATE])
            for field in ("sport", "dport"):
                _run(tc + ["filter", "add", "dev", dev, "parent", "1:",
                           "protocol", "ip", "prio", "1", "u32",
                           "match", "ip", field, str(LIBVIRTD_TCP_PORT),
                           "0xffff", "flowid", "1:20"])
        self.rate_bytes_per_s = rate_bytes_per_s

    def unshape(self, ends=("a", "b")):
        """Remove the veth's rate limit at ``ends`` (see :meth:`shape`)."""
        for prefix, dev in self._ends(ends):
            _run(prefix + ["tc", "qdisc", "del", "dev", dev, "root"],
                 check=False)
        if set(ends) >= {"a", "b"}:
            self.rate_bytes_per_s = None

    @staticmethod
    def _ends(ends):
        where = {"a": ([], VETH_A), "b": (_in_b(), VETH_B)}
        unknown = set(ends) - set(where)
        if unknown:
            raise ValueError("ends: %s, not a or b"
                             % ", ".join(sorted(unknown)))
        return [where[e] for e in ("a", "b") if e in ends]

    # ---------------------------------------------------------- migration

    def migrate(self, domain_name, bandwidth_bytes_per_s=None,
                downtime_limit_s=None, timeout=60, check_guest=True,
                auto_converge=False, downtime_steps=None, on_poll=None,
                destination_xml=None):
        """Live-migrate the running domain ``domain_name`` from A to B.

        Peer-to-peer (A's libvirtd drives it, as Nova does:
        ``migrateToURI3`` with VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER),
        the migration stream going to ``tcp://10.77.0.2``.

        ``bandwidth_bytes_per_s``: QEMU's bandwidth cap, bytes/s; libvirt
        takes whole MiB/s, so it is rounded to the nearest MiB/s (>= 1).
        ``downtime_limit_s``: QEMU's downtime limit, seconds (set with
        migrateSetMaxDowntime, whole ms, before the migration starts;
        checked once the job runs).  ``downtime_steps``: Nova's schedule
        instead, ``(delay_s, limit_ms)`` pairs (as
        ``nova.virt.libvirt.migration.downtime_steps`` yields them): each
        limit is set once the job has run ``delay_s``, as Nova's monitor
        does.  ``auto_converge``: VIR_MIGRATE_AUTO_CONVERGE (QEMU throttles
        the guest's vCPUs when the pre-copy does not converge).
        ``on_poll(dom, elapsed_s)``: called at every poll while the job
        runs (as Nova's monitor acts on a running migration); what it
        raises is the migration's error (the job is aborted first).
        ``destination_xml``: the domain's definition on B
        (VIR_MIGRATE_PARAM_DEST_XML), as Nova passes one: without it, B
        gets the source's current one, temporary tunings included.
        ``timeout``: seconds; then the job is
        aborted (abortJob), the domain stays on A, and
        :class:`MigrationTimeout` is raised (unless the migration completed
        before the abort took effect: then it returns as usual).

        ``check_guest``: for a guest started with a ``console_log`` that
        runs a workload, end with the workload's own integrity check on
        host B (:func:`rtmig_nova.testbed.guest.check_after_migration`,
        a few seconds): :class:`~rtmig_nova.testbed.guest.
        GuestIntegrityError`, its ``stats`` the ones below, if the guest
        lost writes, failed or went silent.

        Returns what libvirt/QEMU measured for the completed job (the
        destination's VIR_DOMAIN_JOB_STATS_COMPLETED), in SI units:

        ``total_time_s``      time_elapsed: start to finish, s
        ``downtime_s``        downtime: guest paused, s
        ``downtime_net_s``    downtime without the network time, s
        ``setup_time_s``      setup_time, s
        ``transferred_bytes`` data_processed: bytes sent
        ``memory_bytes``      memory_total: guest RAM, bytes
        ``memory_sent_bytes`` memory_processed, bytes
        ``normal_pages``      memory_normal (non-zero pages sent)
        ``constant_pages``    memory_constant (zero pages)
        ``page_size_bytes``   memory_page_size
        ``iterations``        memory_iteration: QEMU's dirty-sync-count
        ``dirty_rate_pages_per_s``  memory_dirty_rate, pages/s
        ``throughput_bytes_per_s``  memory_bps: bytes/s QEMU measured
        ``wall_time_s``       around migrateToURI3, measured here, s
        ``bandwidth_limit_bytes_per_s``  the cap applied (MiB multiple)
        ``downtime_limit_s``  the limit read back from the source, s
        ``max_iteration_seen``  highest iteration seen while polling
        ``started_at``        time.monotonic() when the migration started
        ``paused_at``         time.monotonic() when libvirt on A reported
                              the guest paused (None: not seen)
        ``resumed_at``        ... and libvirt on B resumed it
                              (:class:`PauseWatch`)
        ``progress``          (seconds since the start, bytes sent,
                              iteration) of every poll (every 50 ms)
        ``guest_check``       the integrity check's IntegrityCheck, or None
        ``libvirt``           the raw jobStats dict (ms, bytes, ...)
        """
        from rtmig_nova.testbed import guest
        console = self.console_logs.get(domain_name) if check_guest \
            else None
        libvirt = _quiet_libvirt()
        conn = libvirt.open(URI_A)
        events = contextlib.ExitStack()
        try:
            dom = conn.lookupByName(domain_name)
            watch = events.enter_context(PauseWatch(domain_name))
            params = {libvirt.VIR_MIGRATE_PARAM_URI: MIGRATE_URI}
            if destination_xml is not None:
                params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = destination_xml
            limit_bps = None
            if bandwidth_bytes_per_s is not None:
                mib = max(1, int(round(bandwidth_bytes_per_s / MIB)))
                params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = mib
                limit_bps = mib * MIB
            want_ms = None
            steps = list(downtime_steps or ())
            if steps and downtime_limit_s is not None:
                raise TestbedError("give downtime_limit_s or "
                                   "downtime_steps, not both")
            if steps:
                downtime_limit_s = steps.pop(0)[1] / 1000.0
            if downtime_limit_s is not None:
                want_ms = max(1, int(round(downtime_limit_s * 1000)))
                dom.migrateSetMaxDowntime(want_ms, 0)
            flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
            if auto_converge:
                flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
            box = {}

            def run():
                # Its own connection: with the migration call outstanding, an
                # abortJob sent on the same connection was seen to wait for
                # the migration's end (libvirt 9.0) -- never, at a link the
                # guest outruns.
                try:
                    mig = libvirt.open(URI_A)
                    try:
                        mig.lookupByName(domain_name).migrateToURI3(
                            URI_B, params, flags)
                    finally:
                        mig.close()
                except BaseException as exc:
                    box["error"] = exc
                box["end"] = time.monotonic()

            worker = threading.Thread(target=run, daemon=True,
                                      name="rtmtb-migrate")
            before = None if console is None \
                else guest.console_mark(console)
            start = time.monotonic()
            worker.start()
            deadline = start + timeout
            last, max_iter, got_ms = {}, 0, None
            progress = []
            while worker.is_alive():
                worker.join(0.05)
                if not worker.is_alive():
                    break
                # Every call bounded: one stuck in libvirt is out of reach of
                # signals (pytest-timeout's included) and would hang us.
                try:
                    sample = _bounded(lambda: dom.jobStats(0), CALL_TIMEOUT)
                except (libvirt.libvirtError, TimeoutError):
                    sample = {}
                if sample.get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE:
                    last = sample
                    max_iter = max(max_iter,
                                   sample.get("memory_iteration", 0))
                    progress.append((time.monotonic() - start,
                                     sample.get("data_processed", 0),
                                     sample.get("memory_iteration", 0)))
                    if on_poll is not None:
                        try:
                            on_poll(dom, time.monotonic() - start)
                        except BaseException:
                            with contextlib.suppress(libvirt.libvirtError,
                                                     TimeoutError):
                                _bounded(dom.abortJob, CALL_TIMEOUT)
                            worker.join(15)
                            raise
                    while steps and time.monotonic() - start >= steps[0][0]:
                        want_ms = max(1, int(steps.pop(0)[1]))
                        with contextlib.suppress(libvirt.libvirtError,
                                                 TimeoutError):
                            _bounded(lambda: dom.migrateSetMaxDowntime(
                                want_ms, 0), CALL_TIMEOUT)
                    if want_ms is not None and got_ms is None:
                        got_ms = _read_downtime(dom, libvirt)
                        if got_ms is not None and got_ms != want_ms:
                            _bounded(lambda: dom.migrateSetMaxDowntime(
                                want_ms, 0), CALL_TIMEOUT)
                            got_ms = _read_downtime(dom, libvirt)
                if time.monotonic() > deadline:
                    try:
                        _bounded(dom.abortJob, CALL_TIMEOUT)
                    except (libvirt.libvirtError, TimeoutError):
                        pass        # too late to abort, or already over
                    worker.join(15)
                    if worker.is_alive() or "error" in box:
                        raise MigrationTimeout(
                            "migration of %s did not finish in %ss: "
                            "aborted" % (domain_name, timeout),
                            _si_stats(last))
                    # It completed before the abort could take effect.
            if "error" in box:
                raise TestbedError("migration of %s failed: %s"
                                   % (domain_name, box["error"])
                                   ) from box["error"]
            wall = box["end"] - start
            mark = None if console is None else guest.console_mark(console)
            # B resumed the guest before the call returned; its event
            # may still be on the way
            until = time.monotonic() + 2.0
            while watch.resumed_at is None and time.monotonic() < until:
                time.sleep(0.01)
        finally:
            events.close()
            conn.close()
        raw = _bounded(lambda: _completed_stats(libvirt, domain_name),
                       CALL_TIMEOUT)
        out = _si_stats(raw)
        out.update(wall_time_s=wall, bandwidth_limit_bytes_per_s=limit_bps,
                   downtime_limit_s=(None if got_ms is None
                                     else got_ms / 1000.0),
                   max_iteration_seen=max(max_iter,
                                          out.get("iterations") or 0),
                   started_at=start, progress=progress,
                   paused_at=watch.paused_at, resumed_at=watch.resumed_at)
        if want_ms is not None and got_ms is None:
            out["downtime_limit_s"] = want_ms / 1000.0
        out["guest_check"] = None
        if mark is not None:
            try:
                out["guest_check"] = guest.check_after_migration(
                    console, mark, since=before)
            except guest.GuestIntegrityError as exc:
                exc.stats = out
                raise
        return out


_EVENT_LOOP = threading.Lock()
_event_loop_running = False


def _event_loop(libvirt):
    """libvirt's default event loop, run in a daemon thread of this
    process from the first call on: connections opened after it deliver
    domain events."""
    global _event_loop_running
    with _EVENT_LOOP:
        if _event_loop_running:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run():
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, daemon=True,
                         name="rtmtb-libvirt-events").start()
        _event_loop_running = True


class PauseWatch:
    """When libvirt saw domain ``name`` paused on A and resumed on B
    (``time.monotonic()``, s): the guest's pause as the hypervisors see
    it, QEMU's downtime plus what libvirt does before it resumes the
    guest on B (its Finish call over the link).  A context manager;
    ``paused_at`` and ``resumed_at`` stay None for what did not
    happen."""

    def __init__(self, name):
        self.name = name
        self.paused_at = self.resumed_at = None
        self._conns = []

    def __enter__(self):
        libvirt = _quiet_libvirt()
        _event_loop(libvirt)
        life = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
        for uri, event, attr in (
                (URI_A, libvirt.VIR_DOMAIN_EVENT_SUSPENDED, "paused_at"),
                (URI_B, libvirt.VIR_DOMAIN_EVENT_RESUMED, "resumed_at")):
            def seen(_conn, dom, ev, _detail, _opaque, event=event,
                     attr=attr):
                now = time.monotonic()
                if dom.name() == self.name and ev == event and \
                        getattr(self, attr) is None:
                    setattr(self, attr, now)
            conn = libvirt.open(uri)
            self._conns.append(
                (conn, conn.domainEventRegisterAny(None, life, seen, None)))
        return self

    def __exit__(self, *exc):
        for conn, callback in self._conns:
            with contextlib.suppress(Exception):
                conn.domainEventDeregisterAny(callback)
            conn.close()
        self._conns = []

    @property
    def paused_s(self):
        """Paused on A to resumed on B, s (None: not both seen)."""
        if self.paused_at is None or self.resumed_at is None:
            return None
        return self.resumed_at - self.paused_at


def destroy_domain(uri, name):
    """Destroy the running domain ``name`` on ``uri``, if it is there."""
    libvirt = _quiet_libvirt()
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError:
        pass            # not there
    finally:
        conn.close()


def incoming_vcpu_threads(name):
    """vCPU thread ids of host B's incoming QEMU of domain ``name`` (the
    one started with ``-incoming``), [] while it has none.  B's pid files
    are in its own mount namespace; its processes are in A's pid
    namespace, so they are found by their command line."""
    from rtmig_nova.enforce import deadline
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"-incoming" in argv and any(
                a.startswith(b"guest=" + name.encode() + b",")
                for a in argv):
            try:
                return [tid for tid, comm in deadline.threads(int(pid))
                        if comm.startswith("CPU ") and comm.endswith("/TCG")]
            except (OSError, ValueError):
                return []       # it ended meanwhile
    return []


def qemu_version(uri=URI_A):
    """The QEMU release ("MAJOR.MINOR") libvirt runs at ``uri``
    (``virConnectGetVersion``): what the models follow on this testbed."""
    from rtmig_nova.model import precopy
    libvirt = _quiet_libvirt()
    conn = libvirt.open(uri)
    try:
        return precopy.qemu_version(conn.getVersion())
    finally:
        conn.close()


def _completed_stats(libvirt, domain_name):
    conn_b = libvirt.open(URI_B)
    try:
        return conn_b.lookupByName(domain_name).jobStats(
            libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    finally:
        conn_b.close()


def _read_downtime(dom, libvirt):
    try:
        return _bounded(lambda: dom.migrateGetMaxDowntime(0), CALL_TIMEOUT)
    except (libvirt.libvirtError, TimeoutError):
        return None


def _host_uuid(conn):
    import xml.etree.ElementTree as ET
    return ET.fromstring(conn.getCapabilities()).findtext("host/uuid")


_SI_KEYS = (
    # (our key, libvirt key, factor)
    ("total_time_s", "time_elapsed", 1e-3),
    ("downtime_s", "downtime", 1e-3),
    ("downtime_net_s", "downtime_net", 1e-3),
    ("setup_time_s", "setup_time", 1e-3),
    ("transferred_bytes", "data_processed", 1),
    ("remaining_bytes", "data_remaining", 1),
    ("memory_bytes", "memory_total", 1),
    ("memory_sent_bytes", "memory_processed", 1),
    ("normal_pages", "memory_normal", 1),
    ("constant_pages", "memory_constant", 1),
    ("page_size_bytes", "memory_page_size", 1),
    ("iterations", "memory_iteration", 1),
    ("dirty_rate_pages_per_s", "memory_dirty_rate", 1),
    ("throughput_bytes_per_s", "memory_bps", 1),
)


def _si_stats(raw):
    out = {}
    for key, lv_key, factor in _SI_KEYS:
        value = raw.get(lv_key)
        out[key] = None if value is None else (
            value * factor if factor != 1 else value)
    out["libvirt"] = dict(raw)
    return out


# --------------------------------------------------------------- API

def up(workdir, rate_bytes_per_s=None, cgroups=True, timeout=60,
       lock_timeout=120, lan=False):
    """Bring the testbed up and return its :class:`Testbed`.

    First removes what an earlier (crashed) run left: testbed domains on
    both hosts, host B's daemons and QEMUs, the namespace, the veth (and
    its qdiscs), B's cgroups.  ``workdir`` holds host B's configuration,
    state and logs (recreated; not under /run, /etc/libvirt or
    /var/*/libvirt).  ``rate_bytes_per_s`` shapes the veth (see
    :meth:`Testbed.shape`).  ``lan``: the guests' and the client's
    Ethernet segment (see the module doc).  If bringing up fails, what was
    made is
    removed again before the error propagates.

    Only one testbed can exist on a machine: up() holds a lock
    (:data:`LOCK_PATH`, flock) until down(); another process's up() or
    down() waits up to ``lock_timeout`` s for it.  The kernel drops the
    lock of a process that dies, so a crashed run never blocks the next.
    """
    _acquire(lock_timeout)
    try:
        errors = _cleanup(workdir)
        if errors:
            raise TestbedError("leftovers of an earlier run could not be "
                               "removed: %s" % "; ".join(errors))
        bed = Testbed(workdir, rate_bytes_per_s=rate_bytes_per_s,
                      cgroups=cgroups, lan=lan)
        bed._start(timeout)
    except BaseException:
        try:
            _cleanup(workdir)
        finally:
            _release()
        raise
    return bed


def down(workdir=None, lock_timeout=120):
    """Remove the testbed: testbed domains on both hosts, host B's
    processes, the namespace, the veth, B's cgroups.  Idempotent; does
    every step even if one fails, then raises :class:`TestbedError`
    listing what could not be removed.  Host A's libvirtd is left alone
    but for destroying domains named ``rtmtb-*``.  The work dir's files
    (configs, logs) stay.  Releases the lock up() took (or waits for
    another process's testbed to be released first)."""
    _acquire(lock_timeout)
    try:
        errors = _cleanup(workdir)
    finally:
        _release()
    if errors:
        raise TestbedError("testbed not fully removed: %s"
                           % "; ".join(errors))


__all__ = ["Testbed", "TestbedError", "MigrationTimeout", "up", "down",
           "leftovers", "locked", "host_b_pids", "DOMAIN_PREFIX", "URI_A",
           "URI_B", "MIGRATE_URI", "NETNS", "VETH_A", "VETH_B", "IP_A",
           "IP_B", "BRIDGE", "CLIENT_NETNS", "IP_CLIENT", "GUEST_IPS",
           "guest_mac", "in_client"]
