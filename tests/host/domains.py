"""A throw-away running TCG domain on the host's libvirtd, for tests."""

import contextlib
import os
import re
import uuid

DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><serial type='pty'/></devices>
</domain>"""
PREFIX = "rtmigtest-"
URI = "qemu:///system"


def _conn():
    import libvirt
    return libvirt.open(URI)


def _owner(name):
    """The pid in a test domain's name (``PREFIX`` PID ``-`` HEX), or None
    for a name of another form (an older run's, which is stale)."""
    m = re.fullmatch(re.escape(PREFIX) + r"(\d+)-[0-9a-f]+", name)
    return int(m.group(1)) if m else None


def alive(pid):
    """Whether process ``pid`` exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(conn):
    """Destroy test domains an earlier, crashed run left running: those
    whose owning test process is gone, so that two test runs on one host
    leave each other's domains alone."""
    for dom in conn.listAllDomains():
        name = dom.name()
        if not name.startswith(PREFIX) or not dom.isActive():
            continue
        owner = _owner(name)
        if owner is None or not alive(owner):
            dom.destroy()


@contextlib.contextmanager
def transient_domain():
    """Yield a running transient domain (no disk: it idles in firmware, but
    its QEMU process, threads and cgroups are real); destroyed afterwards."""
    conn = _conn()
    remove_stale(conn)
    dom = conn.createXML(DOMAIN_XML.format(
        name=f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"), 0)
    try:
        yield dom
    finally:
        try:
            dom.destroy()
        finally:
            conn.close()


def libvirtd_up():
    """Whether libvirt-python is installed and libvirtd answers."""
    try:
        import libvirt
    except ImportError:
        return False
    try:
        libvirt.open(URI).close()
        return True
    except libvirt.libvirtError:
        return False


REQUIRES_LIBVIRTD = (
    "needs libvirt-python and a libvirtd at qemu:///system: "
    "tools/run-tests.sh installs and starts them")


@contextlib.contextmanager
def namespace_with_veth(ns, ifname):
    """A network namespace holding a veth pair ``ifname``/``ifname``p,
    both up; deleted afterwards (a stale one of the same name first)."""
    import subprocess
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", ifname, "type",
                        "veth", "peer", "name", ifname + "p"], check=True)
        for name in (ifname, ifname + "p"):
            subprocess.run(["ip", "-n", ns, "link", "set", name, "up"],
                           check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


@contextlib.contextmanager
def reservation_host(netns, state_dir):
    """What a reservation changes, for tests: a running domain, a helper
    process whose main thread takes SCHED_DEADLINE, the namespace with the
    interface to shape, and a state dir."""
    import subprocess
    import sys
    helper = subprocess.Popen([sys.executable, "-c",
                               "import time; time.sleep(120)"])
    try:
        with transient_domain() as dom:
            yield {"dom": dom, "name": dom.name(), "tid": helper.pid,
                   "netns": netns, "state": str(state_dir)}
    finally:
        helper.kill()
        helper.wait(10)


def reservation_snapshot(h, ifname):
    """Every value a reservation changes, to compare before and after."""
    from rtmig_nova.enforce import deadline
    from rtmig_nova.enforce import libvirt_controls as lc
    from rtmig_nova.enforce import netshape
    return (lc.get_migration(h["dom"]), lc.get_cpu(h["dom"]),
            deadline.get_attr(h["tid"]).as_tuple()[:4],
            netshape.show(ifname, h["netns"]))
