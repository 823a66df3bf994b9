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

"""Network bandwidth reservations with an HTB hierarchy (via pyroute2).

A :class:`ShapingPlan` reserves egress bandwidth on one interface (the
migration interface) for a live migration and for real-time VMs' flows::

    qdisc htb 1: (root, default 1:fffe)
      class 1:1      the link                rate = ceil = link_rate
        class 1:10   the migration           rate, ceil (default: = rate)
        class 1:20   reserved[0]             rate, ceil (default: = rate)
        class 1:21   reserved[1]  ...
        class 1:fffe best effort (the rest)  rate = max(link - sum, floor),
                                             ceil = link_rate

u32 filters on 1: send matching packets to their class: the migration's at
filter priorities 1 (IPv4) and 2 (IPv6), ``reserved[i]``'s at 3 + 2i and
4 + 2i, so the first class of that order whose match fits a packet wins.
Everything else (ARP, unmatched traffic) goes to the best-effort class.

Units: every rate is in **bytes/s**, the way the kernel counts them for HTB:
whole frames from the Ethernet header on (14 bytes + IP packet; no preamble,
FCS or inter-frame gap), so TCP goodput through a class of rate R is about
R * MSS / (MTU + 14) (about 0.956 R with a 1500-byte MTU and TCP
timestamps).  The kernel's rate fields are bytes/s as well; they are
rounded to whole bytes/s (64-bit rates above 2**32 - 1 bytes/s are used
when needed).

Matching (:class:`Match`): destination port range (TCP and UDP, IPv4 and
IPv6) and/or peer (destination) address or prefix (IPv4 or IPv6).  Port
matches assume the transport header right after the fixed IP header: IPv4
packets with options, IPv4 fragments other than the first and IPv6 packets
with extension headers are not matched by port and go to the best-effort
class.

Privileges: :func:`apply`, :func:`show` and :func:`remove` run in the
``sys_admin_pctxt`` privsep context and take and return plain data only.
:func:`apply_plan` is the non-privileged entry point: it validates the plan
(one-line :class:`ValueError` before anything changes) and calls
:func:`apply`.

Ownership: a root qdisc is ours when it is ``htb`` with handle ``1:`` and
default class ``1:fffe``.  A kernel default root qdisc (handle 0:, e.g.
noqueue, pfifo_fast, fq_codel, mq) is replaced; any other root qdisc is
foreign and is left alone (:class:`ForeignQdiscError`).
"""

import contextlib
import dataclasses
import ipaddress
import math
import numbers
import os
import socket
import threading

from rtmig_nova.enforce import privileged
from rtmig_nova.model import admission

__all__ = ["Match", "TrafficClass", "ShapingPlan", "NetShapeError",
           "ForeignQdiscError", "validate", "apply_plan", "apply", "show",
           "remove", "MIGRATION_PORTS"]

MIGRATION_PORTS = (49152, 49215)
"""libvirt's default port range for QEMU's migration stream."""

ROOT_HANDLE = 0x10000           # 1:
LINK_CLASS = 0x10001            # 1:1
MIGRATION_CLASS = 0x10010       # 1:10
RESERVED_BASE = 0x10020         # 1:20, 1:21, ...
DEFAULT_MINOR = 0xfffe
DEFAULT_CLASS = 0x10000 | DEFAULT_MINOR   # 1:fffe
MAX_RESERVED = 1000            # class ids 1:20.., filter prios up to 2002
TC_H_ROOT = 0xffffffff

DEFAULT_FLOOR_FRACTION = 0.001
"""The best-effort class keeps at least this share of the link..."""
DEFAULT_FLOOR_MIN = 1500.0
"""...and at least this many bytes/s, even when reservations fill the
link (its ceil is the link rate: it borrows whatever is unused)."""

_MTU = 1600                     # bytes: tc's default HTB mtu
# A class's burst: its bucket in time at the rate is a u32 of the kernel's
# ticks (64 ns): 10 s stays far inside it.
MAX_BURST_S = 10.0
MAX_BURST = 1 << 30             # bytes
_QUANTUM_MIN = 1600
_QUANTUM_MAX = 200000           # the kernel warns above this
_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86dd
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_IFNAMSIZ = 16


class NetShapeError(RuntimeError):
    """Changing the qdiscs failed; the message is one line."""


class ForeignQdiscError(NetShapeError):
    """The interface has a root qdisc that rtmig-nova did not create."""


@dataclasses.dataclass
class Match:
    """Which packets a class gets (all given criteria must hold).

    ``dst_ports``: ``(lo, hi)``, an inclusive TCP/UDP destination port range
    (one port: ``(5001, 5001)``).  ``peer``: the destination address or
    prefix, ``"10.0.0.2"``, ``"10.0.0.0/24"`` or an IPv6 one.
    """
    dst_ports: tuple | None = None
    peer: str | None = None


@dataclasses.dataclass
class TrafficClass:
    """A reservation: ``rate`` bytes/s guaranteed, at most ``ceil`` bytes/s
    (``None``: ``ceil = rate``, a hard cap; give the link rate to let the
    class borrow unused bandwidth) for the packets ``match`` selects.
    ``burst``: bytes the class may send at once (at its ceil) before its
    rate applies, its token bucket (``None``: 1 ms at the rate and one
    MTU); a flow that sends in bursts, such as a video frame as a train of
    datagrams, needs one burst, or the class paces each frame out at its
    rate."""
    name: str
    rate: float
    ceil: float | None = None
    match: Match = dataclasses.field(default_factory=Match)
    burst: float | None = None


@dataclasses.dataclass
class ShapingPlan:
    """The HTB hierarchy for egress on ``ifname`` (in network namespace
    ``netns``, ``None``: the current one).

    ``link_rate`` bytes/s is what the link carries (e.g. 125e6 for
    1 Gbit/s Ethernet); ``migration`` and ``reserved`` are guaranteed their
    rates; ``default_rate`` (bytes/s, ``None``: what is left, at least a
    small floor) is the best-effort class's guarantee, its ceil is the link
    rate.
    """
    ifname: str
    link_rate: float
    migration: TrafficClass
    reserved: list = dataclasses.field(default_factory=list)
    netns: str | None = None
    default_rate: float | None = None


# -- validation (pure, plus existence checks that need no privileges) ------

# Ethernet header + IPv4 + TCP with timestamps: what a full-size TCP segment
# of MSS payload bytes costs in the frame bytes HTB counts.
ETH_HEADER = 14
TCP_IP_HEADERS = 52


def frame_rate(payload_rate, mtu=1500):
    """Frame bytes/s HTB must allow for ``payload_rate`` bytes/s of TCP
    payload (a migration stream's bandwidth as QEMU and libvirt count it)
    in full-size segments: payload x (MTU + 14) / (MTU - 52)."""
    return payload_rate * (mtu + ETH_HEADER) / (mtu - TCP_IP_HEADERS)


def payload_rate(frame_rate_, mtu=1500):
    """The inverse of :func:`frame_rate`: TCP payload bytes/s in
    full-size segments through a class of ``frame_rate_`` bytes/s."""
    return frame_rate_ * (mtu - TCP_IP_HEADERS) / (mtu + ETH_HEADER)


def _fmt_rate(value, scale=None):
    """``"60 MB/s"``: decimal units, the scale picked from ``scale``."""
    ref = abs(value if scale is None else scale)
    for factor, unit in ((1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")):
        if ref >= factor:
            return f"{value / factor:.4g} {unit}"
    return f"{value:.4g} B/s"


def _rate(what, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number of bytes/s, got "
                         f"{value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be > 0 bytes/s, got {value!r}")
    return float(value)


def _check_ifname(ifname):
    if (not isinstance(ifname, str) or not ifname
            or len(ifname) >= _IFNAMSIZ or ifname in (".", "..")
            or any(c == "/" or c.isspace() for c in ifname)):
        raise ValueError(f"invalid interface name {ifname!r}")


def _check_netns(netns):
    if netns is None:
        return
    if (not isinstance(netns, str) or not netns or "/" in netns
            or netns in (".", "..")):
        raise ValueError(f"invalid network namespace name {netns!r}")
    if not os.path.exists(os.path.join(_netns_dir(), netns)):
        raise ValueError(f"unknown network namespace {netns!r} (not in "
                         f"{_netns_dir()})")


def _netns_dir():
    from pyroute2 import netns as pr_netns
    return pr_netns.NETNS_RUN_DIR


def _where(ifname, netns):
    return ifname if netns is None else f"{ifname} (netns {netns})"


def _ports(what, ports):
    if ports is None:
        return None
    try:
        lo, hi = ports
    except (TypeError, ValueError):
        raise ValueError(f"{what} dst_ports must be a (lo, hi) pair, got "
                         f"{ports!r}") from None
    for p in (lo, hi):
        if isinstance(p, bool) or not isinstance(p, int) \
                or not 0 <= p <= 65535:
            raise ValueError(f"{what} dst_ports {ports!r}: ports are "
                             f"integers 0..65535")
    if lo > hi:
        raise ValueError(f"{what} dst_ports {ports!r}: lo > hi")
    return (lo, hi)


def _peer(what, peer):
    if peer is None:
        return None
    if not isinstance(peer, str):
        raise ValueError(f"{what} peer must be an address or prefix string, "
                         f"got {peer!r}")
    try:
        return ipaddress.ip_network(peer.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{what} peer {peer!r}: {exc}") from None


def _check_class(what, tc, link_rate):
    if not isinstance(tc, TrafficClass):
        raise ValueError(f"{what} must be a TrafficClass, got "
                         f"{type(tc).__name__}")
    if not isinstance(tc.name, str) or not tc.name.strip():
        raise ValueError(f"{what} needs a non-empty name")
    label = f"{what} {tc.name!r}"
    rate = _rate(f"{label} rate", tc.rate)
    if tc.ceil is not None:
        ceil = _rate(f"{label} ceil", tc.ceil)
        if ceil < rate:
            raise ValueError(f"{label} ceil {_fmt_rate(ceil)} is below its "
                             f"rate {_fmt_rate(rate)}")
        if ceil > link_rate:
            raise ValueError(f"{label} ceil {_fmt_rate(ceil)} exceeds the "
                             f"link's {_fmt_rate(link_rate)}")
    if tc.burst is not None:
        burst = tc.burst
        if isinstance(burst, bool) or not isinstance(burst, numbers.Real):
            raise ValueError(f"{label} burst must be a number of bytes, "
                             f"got {burst!r}")
        if not _MTU <= burst <= min(MAX_BURST_S * rate, MAX_BURST):
            raise ValueError(
                f"{label} burst {burst:.0f} B outside {_MTU} B.."
                f"{min(MAX_BURST_S * rate, MAX_BURST):.0f} B (one MTU "
                f"to {MAX_BURST_S:g} s at its rate, at most "
                f"{MAX_BURST} B)")
    match = tc.match
    if not isinstance(match, Match):
        raise ValueError(f"{label} match must be a Match, got "
                         f"{type(match).__name__}")
    _ports(label, match.dst_ports)
    _peer(label, match.peer)
    if match.dst_ports is None and match.peer is None:
        raise ValueError(f"{label} matches no packets: give dst_ports "
                         f"and/or peer")
    return rate


def validate(plan, check_host=True):
    """Check ``plan``; raise a one-line :class:`ValueError` if it is wrong.

    Needs no privileges.  With ``check_host``, the network namespace must
    exist, and so must the interface when it is in the current namespace
    (inside another namespace :func:`apply` checks it before changing
    anything).
    """
    if not isinstance(plan, ShapingPlan):
        raise ValueError(f"plan must be a ShapingPlan, got "
                         f"{type(plan).__name__}")
    _check_ifname(plan.ifname)
    link = _rate("link_rate", plan.link_rate)
    mig = _check_class("migration", plan.migration, link)
    if isinstance(plan.reserved, (str, bytes)) or not hasattr(
            plan.reserved, "__iter__"):
        raise ValueError("reserved must be a list of TrafficClass")
    reserved = list(plan.reserved)
    if len(reserved) > MAX_RESERVED:
        raise ValueError(f"at most {MAX_RESERVED} reserved classes, got "
                         f"{len(reserved)}")
    res = sum(_check_class("reserved", tc, link) for tc in reserved)
    names = [plan.migration.name] + [tc.name for tc in reserved]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"class names must be unique: {', '.join(dup)}")
    best = 0.0
    if plan.default_rate is not None:
        best = _rate("default_rate", plan.default_rate)
    # The same link arithmetic as the scheduler filter's admission.
    if not admission.fits_link(link, [res, best], mig):
        parts = [f"migration {_fmt_rate(mig, link)}"]
        if reserved:
            parts.append(f"reserved {_fmt_rate(res, link)}")
        if plan.default_rate is not None:
            parts.append(f"best-effort {_fmt_rate(best, link)}")
        verb = "exceed" if len(parts) > 1 else "exceeds"
        raise ValueError(f"{_where(plan.ifname, plan.netns)}: "
                         f"{' + '.join(parts)} {verb} the link's "
                         f"{_fmt_rate(link)}")
    if check_host:
        _check_netns(plan.netns)
        if plan.netns is None:
            try:
                socket.if_nametoindex(plan.ifname)
            except OSError:
                raise ValueError(f"unknown interface {plan.ifname!r}") \
                    from None


def _default_rate(plan):
    if plan.default_rate is not None:
        return float(plan.default_rate)
    used = plan.migration.rate + sum(tc.rate for tc in plan.reserved)
    floor = max(plan.link_rate * DEFAULT_FLOOR_FRACTION, DEFAULT_FLOOR_MIN)
    return min(max(plan.link_rate - used, floor), float(plan.link_rate))


def _plan_from_dict(data):
    """The inverse of ``dataclasses.asdict`` (tuples may come back as
    lists through privsep)."""
    def tclass(d):
        m = d.get("match") or {}
        ports = m.get("dst_ports")
        return TrafficClass(
            name=d["name"], rate=d["rate"], ceil=d.get("ceil"),
            burst=d.get("burst"),
            match=Match(dst_ports=None if ports is None else tuple(ports),
                        peer=m.get("peer")))
    try:
        return ShapingPlan(
            ifname=data["ifname"], link_rate=data["link_rate"],
            migration=tclass(data["migration"]),
            reserved=[tclass(d) for d in data.get("reserved") or ()],
            netns=data.get("netns"), default_rate=data.get("default_rate"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed shaping plan: {exc!r}") from None


# -- the kernel side --------------------------------------------------------

def _classid(handle):
    return f"{handle >> 16:x}:{handle & 0xffff:x}"


def _kernel_rate(rate):
    return max(1, int(round(rate)))


def _class_params(rate, ceil, burst=None):
    rate, ceil = _kernel_rate(rate), _kernel_rate(ceil)
    burst = rate // 1000 + _MTU if burst is None else int(burst)
    return dict(rate=rate, ceil=ceil,
                burst=burst,                    # default: 1 ms + mtu
                cburst=ceil // 1000 + _MTU,
                quantum=min(max(rate // 10, _QUANTUM_MIN), _QUANTUM_MAX))


def _byte_keys(offset, data, masks):
    """u32 keys, one a byte, as pyroute2's ``"value/mask+offset"``.

    One byte a key because pyroute2's key parser drops zero bytes inside a
    mask (``0x00ff00ff`` would shift); it merges the bytes back into 32-bit
    kernel keys itself (``tc filter show`` lists them merged).
    """
    return [f"0x{v:02x}/0x{m:02x}+{offset + i}"
            for i, (v, m) in enumerate(zip(data, masks)) if m]


def _u32_selectors(match):
    """``[(eth protocol, [u32 keys])]``: one filter each."""
    ports = match.dst_ports
    net = None if match.peer is None else ipaddress.ip_network(match.peer)
    families = [4, 6] if net is None else [net.version]
    blocks = [None] if ports is None else _port_blocks(*ports)
    protos = [None] if ports is None else [_IPPROTO_TCP, _IPPROTO_UDP]
    out = []
    for family in families:
        if family == 4:
            eth, proto_off, port_off, addr_off = _ETH_P_IP, 9, 22, 16
            # header length 5 words and fragment offset 0: the transport
            # header is at byte 20
            fixed = _byte_keys(0, [0x05], [0x0f]) if ports else []
            if ports:
                fixed += _byte_keys(6, [0, 0], [0x1f, 0xff])
        else:
            eth, proto_off, port_off, addr_off = _ETH_P_IPV6, 6, 42, 24
            fixed = []
        addr = []
        if net is not None:
            addr = _byte_keys(addr_off, net.network_address.packed,
                              net.netmask.packed)
        for proto in protos:
            for block in blocks:
                keys = list(fixed) + addr
                if proto is not None:
                    keys += _byte_keys(proto_off, [proto], [0xff])
                if block is not None:
                    value, mask = block
                    keys += _byte_keys(port_off, value.to_bytes(2, "big"),
                                       mask.to_bytes(2, "big"))
                out.append((eth, keys))
    return out


def _port_blocks(lo, hi):
    """Cover [lo, hi] with aligned power-of-two blocks ``(value, mask)``."""
    blocks = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        blocks.append((lo, 0xffff & ~(size - 1)))
        lo += size
    return blocks


# pyroute2 (0.9) runs every call on an asyncio loop of the OS thread, and
# asyncio allows one running loop per thread.  Green threads (eventlet, as
# in Nova's services) share one OS thread: a second netlink session opened
# while another green thread waits inside one failed with "This event loop
# is already running".  One session at a time, then.  (Monkey-patched, the
# lock is a green one; unpatched, an ordinary one: made at first use under
# each, since a lock made before eventlet patches threading would block
# the whole OS thread, every green thread with it.)
_NETLINK_LOCKS = {}


def _netlink_lock():
    try:
        from eventlet import patcher
        green = patcher.is_monkey_patched("thread")
    except ImportError:
        green = False
    lock = _NETLINK_LOCKS.get(green)
    if lock is None:
        lock = _NETLINK_LOCKS[green] = threading.RLock()
    return lock


@contextlib.contextmanager
def _ipr(netns):
    from pyroute2 import IPRoute, NetNS
    with _netlink_lock():
        ipr = IPRoute() if netns is None else \
            NetNS(netns, flags=0)       # flags=0: never create it
        try:
            yield ipr
        finally:
            ipr.close()


def _link_index(ipr, ifname, netns):
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        where = "" if netns is None else f" in network namespace {netns!r}"
        raise ValueError(f"unknown interface {ifname!r}{where}")
    return found[0]


def _root_qdisc(ipr, index):
    for msg in ipr.get_qdiscs(index):
        if msg["index"] == index and msg["parent"] == TC_H_ROOT:
            return msg
    return None


def _htb_defcls(msg):
    opts = msg.get_attr("TCA_OPTIONS")
    init = opts.get_attr("TCA_HTB_INIT") if opts is not None else None
    return None if init is None else init["defcls"]


def _is_ours(msg):
    return (msg.get_attr("TCA_KIND") == "htb"
            and msg["handle"] == ROOT_HANDLE
            and _htb_defcls(msg) == DEFAULT_MINOR)


def _is_kernel_default(msg):
    return msg["handle"] == 0


def _describe(msg):
    return f"{msg.get_attr('TCA_KIND')} {_classid(msg['handle'])}"


def _err(exc):
    """One line for a netlink (or other) error."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        args = getattr(exc, "args", ())
        detail = args[1] if len(args) > 1 and args[1] else None
        text = f"{detail or os.strerror(code)} (errno {code})"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _del_root(ipr, index):
    ipr.tc("del", index=index, handle=ROOT_HANDLE, parent=TC_H_ROOT)


def _add_qdisc(ipr, index):
    ipr.tc("add", "htb", index, ROOT_HANDLE, parent=TC_H_ROOT,
           default=DEFAULT_MINOR)


def _add_class(ipr, index, classid, parent, rate, ceil, burst=None):
    ipr.tc("add-class", "htb", index, classid, parent=parent,
           **_class_params(rate, ceil, burst))


def _add_filter(ipr, index, prio, eth_protocol, classid, keys):
    ipr.tc("add-filter", "u32", index, parent=ROOT_HANDLE, prio=prio,
           protocol=eth_protocol, target=classid, keys=keys)


def _steps(plan, index):
    """``[(description, callable(ipr))]`` building the hierarchy, in
    order, and the class table :func:`apply` returns."""
    link = float(plan.link_rate)
    steps = [("add htb root qdisc 1:",
              lambda ipr: _add_qdisc(ipr, index)),
             ("add class 1:1 (link)",
              lambda ipr: _add_class(ipr, index, LINK_CLASS, ROOT_HANDLE,
                                     link, link))]
    table = [dict(name=None, role="link", index=None,
                  classid=_classid(LINK_CLASS), rate=_kernel_rate(link),
                  ceil=_kernel_rate(link))]
    classes = [("migration", None, MIGRATION_CLASS, plan.migration)]
    classes += [("reserved", i, RESERVED_BASE + i, tc)
                for i, tc in enumerate(plan.reserved)]
    for role, i, handle, tc in classes:
        ceil = tc.rate if tc.ceil is None else tc.ceil
        steps.append((f"add class {_classid(handle)} ({role} {tc.name!r})",
                      lambda ipr, h=handle, r=tc.rate, c=ceil,
                      b=tc.burst:
                      _add_class(ipr, index, h, LINK_CLASS, r, c, b)))
        table.append(dict(name=tc.name, role=role, index=i,
                          classid=_classid(handle), rate=_kernel_rate(
                              tc.rate), ceil=_kernel_rate(ceil)))
    best = _default_rate(plan)
    steps.append((f"add class {_classid(DEFAULT_CLASS)} (best effort)",
                  lambda ipr: _add_class(ipr, index, DEFAULT_CLASS,
                                         LINK_CLASS, best, link)))
    table.append(dict(name=None, role="default", index=None,
                      classid=_classid(DEFAULT_CLASS),
                      rate=_kernel_rate(best), ceil=_kernel_rate(link)))
    nfilters = 0
    for k, (role, _, handle, tc) in enumerate(classes):
        for eth, keys in _u32_selectors(tc.match):
            # the kernel keeps one protocol per filter priority
            prio = 2 * k + (1 if eth == _ETH_P_IP else 2)
            family = "IPv4" if eth == _ETH_P_IP else "IPv6"
            steps.append((f"add {family} u32 filter prio {prio} -> "
                          f"{_classid(handle)} ({role} {tc.name!r})",
                          lambda ipr, p=prio, e=eth, h=handle, k=keys:
                          _add_filter(ipr, index, p, e, h, k)))
            nfilters += 1
    return steps, table, nfilters


def _rollback(ipr, index):
    """Delete the root qdisc if it is ours; what happened, for a message."""
    try:
        root = _root_qdisc(ipr, index)
        if root is None or not _is_ours(root):
            return ""
        _del_root(ipr, index)
        return "; removed what was added"
    except Exception as exc:
        return f"; removing the partial HTB failed too: {_err(exc)}"


@privileged.sys_admin_pctxt.entrypoint
def apply(plan):
    """Privileged: build the hierarchy ``plan`` describes, all or nothing.

    ``plan`` is ``dataclasses.asdict(ShapingPlan(...))``.  Replaces our own
    hierarchy if there is one (idempotent) and a kernel default root qdisc;
    refuses (:class:`ForeignQdiscError`) any other root qdisc.  If a step
    fails, the root qdisc it added is deleted (the interface is back to
    the kernel default, without a previous hierarchy of ours) and a
    one-line :class:`NetShapeError` names the step.

    Returns ``{"ifname", "netns", "classes": [{"name", "role", "index",
    "classid", "rate", "ceil"}], "filters": n}``, rates in bytes/s (through
    a privsep daemon the lists arrive as tuples).
    """
    plan = _plan_from_dict(plan)
    validate(plan, check_host=False)
    _check_netns(plan.netns)
    where = _where(plan.ifname, plan.netns)
    with _ipr(plan.netns) as ipr:
        index = _link_index(ipr, plan.ifname, plan.netns)
        steps, table, nfilters = _steps(plan, index)
        root = _root_qdisc(ipr, index)
        replaced = ""
        if root is not None and not _is_kernel_default(root):
            if not _is_ours(root):
                raise ForeignQdiscError(
                    f"{where} already has a root qdisc {_describe(root)} "
                    f"that rtmig-nova did not create; not replacing it")
            try:
                _del_root(ipr, index)
            except Exception as exc:
                raise NetShapeError(f"{where}: could not remove the previous "
                                    f"rtmig HTB: {_err(exc)}") from None
            replaced = "; the previous rtmig shaping was removed too"
        for what, step in steps:
            try:
                step(ipr)
            except Exception as exc:
                msg = f"shaping {where} failed at '{what}': {_err(exc)}"
                msg += _rollback(ipr, index)
                raise NetShapeError(msg + replaced) from None
    return dict(ifname=plan.ifname, netns=plan.netns, classes=table,
                filters=nfilters)


def apply_plan(plan):
    """Validate ``plan`` (a :class:`ShapingPlan`; one-line
    :class:`ValueError`, nothing changed) and :func:`apply` it."""
    validate(plan)
    return apply(dataclasses.asdict(plan))


def _role(handle):
    if handle == LINK_CLASS:
        return "link", None
    if handle == MIGRATION_CLASS:
        return "migration", None
    if handle == DEFAULT_CLASS:
        return "default", None
    if RESERVED_BASE <= handle < DEFAULT_CLASS:
        return "reserved", handle - RESERVED_BASE
    return "other", None


def _class_row(msg):
    opts = msg.get_attr("TCA_OPTIONS")
    parms = opts.get_attr("TCA_HTB_PARMS")
    rate = opts.get_attr("TCA_HTB_RATE64") or parms["rate"]
    ceil = opts.get_attr("TCA_HTB_CEIL64") or parms["ceil"]
    stats = msg.get_attr("TCA_STATS2")
    basic = stats.get_attr("TCA_STATS_BASIC") if stats else None
    queue = stats.get_attr("TCA_STATS_QUEUE") if stats else None
    role, i = _role(msg["handle"])
    parent = msg["parent"]
    return dict(classid=_classid(msg["handle"]),
                parent="root" if parent == TC_H_ROOT else _classid(parent),
                role=role, index=i,
                rate=int(rate), ceil=int(ceil),
                bytes=int(basic["bytes"]) if basic else 0,
                packets=int(basic["packets"]) if basic else 0,
                drops=int(queue["drops"]) if queue else 0)


@privileged.sys_admin_pctxt.entrypoint
def show(ifname, netns=None):
    """Privileged (to enter ``netns``): our HTB classes on ``ifname``.

    ``None`` if the root qdisc is not ours; else a list, sorted by class
    id, of ``{"classid": "1:10", "parent": "1:1" ("root" for 1:1),
    "role": "link" | "migration" | "reserved" | "default", "index": i
    (reserved[i]) or None, "rate", "ceil" (bytes/s), "bytes", "packets"
    (sent, counted at L2), "drops"}``.  Unknown interface or namespace:
    :class:`ValueError`.
    """
    _check_ifname(ifname)
    _check_netns(netns)
    with _ipr(netns) as ipr:
        index = _link_index(ipr, ifname, netns)
        root = _root_qdisc(ipr, index)
        if root is None or not _is_ours(root):
            return None
        rows = [_class_row(m) for m in ipr.get_classes(index)
                if m["index"] == index and m.get_attr("TCA_KIND") == "htb"]
    return sorted(rows, key=lambda r: int(r["classid"].split(":")[1], 16))


def migration_rates(plan):
    """``{"migration": [rate, ceil], "default": [rate, ceil]}`` (bytes/s)
    of the classes :func:`apply` builds for ``plan`` (a
    :class:`ShapingPlan`) whose rates depend on the migration's: what
    :func:`set_rates` changes when a running migration's bandwidth is
    raised."""
    mig = plan.migration
    return {"migration": [float(mig.rate),
                          float(mig.rate if mig.ceil is None else mig.ceil)],
            "default": [_default_rate(plan), float(plan.link_rate)]}


_RATE_ROLES = {"migration": MIGRATION_CLASS, "default": DEFAULT_CLASS}


@privileged.sys_admin_pctxt.entrypoint
def set_rates(ifname, netns, rates):
    """Privileged: change the rate and ceil of our HTB's ``rates`` classes
    (``{"migration" | "default": [rate, ceil]}``, bytes/s) on ``ifname``
    in place (``tc class change``: no packet is dropped, unlike rebuilding
    the hierarchy).  Returns the rates they had, in the same form, or
    ``None`` when the root qdisc is not ours (nothing changed).  A change
    the kernel refuses: :class:`NetShapeError`, the classes changed before
    it set back."""
    _check_ifname(ifname)
    _check_netns(netns)
    where = _where(ifname, netns)
    for role, pair in rates.items():
        if role not in _RATE_ROLES or len(pair) != 2:
            raise ValueError(f"set_rates: unknown class {role!r} or not a "
                             f"[rate, ceil] pair")
        for value in pair:
            _rate(f"{role} rate", value)
    with _ipr(netns) as ipr:
        index = _link_index(ipr, ifname, netns)
        root = _root_qdisc(ipr, index)
        if root is None or not _is_ours(root):
            return None
        rows = {r["role"]: r for r in
                (_class_row(m) for m in ipr.get_classes(index)
                 if m["index"] == index and m.get_attr("TCA_KIND") == "htb")}
        before = {role: [rows[role]["rate"], rows[role]["ceil"]]
                  for role in rates if role in rows}
        done = []
        try:
            for role, (rate, ceil) in rates.items():
                ipr.tc("change-class", "htb", index, _RATE_ROLES[role],
                       parent=LINK_CLASS, **_class_params(rate, ceil))
                done.append(role)
        except Exception as exc:
            for role in reversed(done):
                try:
                    ipr.tc("change-class", "htb", index, _RATE_ROLES[role],
                           parent=LINK_CLASS, **_class_params(*before[role]))
                except Exception:       # the error below is the one to see
                    pass
            raise NetShapeError(f"changing the rates on {where} failed: "
                                f"{_err(exc)}") from None
    return before


@privileged.sys_admin_pctxt.entrypoint
def remove(ifname, netns=None):
    """Privileged: delete our HTB root qdisc from ``ifname`` (the kernel
    restores its default qdisc).  Idempotent: ``False`` if there was
    nothing of ours (a foreign root qdisc is left alone), ``True`` if it
    was removed.  Unknown interface or namespace: :class:`ValueError`."""
    _check_ifname(ifname)
    _check_netns(netns)
    with _ipr(netns) as ipr:
        index = _link_index(ipr, ifname, netns)
        root = _root_qdisc(ipr, index)
        if root is None or not _is_ours(root):
            return False
        try:
            _del_root(ipr, index)
        except Exception as exc:
            if getattr(exc, "code", None) in (2, 22):  # gone meanwhile
                return False
            raise NetShapeError(f"removing the rtmig HTB from "
                                f"{_where(ifname, netns)} failed: "
                                f"{_err(exc)}") from None
    return True
