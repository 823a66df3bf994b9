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

"""``rtmig reserve apply|show|release``: the host reservations of a
migration, through :mod:`rtmig_nova.enforce.reservation`.

``apply`` works in three phases, so that bad input changes nothing:

1. the options and the ``--plan`` file are read and checked (pure: no
   libvirt, no root);
2. the host is asked: the domain must be running, the threads must exist,
   the kernel's SCHED_DEADLINE bounds and the shaping plan must hold;
3. the steps are applied all or nothing by a ``Reservation``.

The enforcement layer is imported only here, when a reserve command runs:
it pulls in oslo.privsep (and eventlet) and pyroute2, which ``--help`` and
the model commands do not need.
"""

import contextlib
import dataclasses
import ipaddress
import json
import math
import os
import re
import sys
import types
import warnings

from rtmig_nova import bounds
from rtmig_nova import safeio
from rtmig_nova import units
from rtmig_nova.cli.errors import EXIT_OK, CliError, os_error_message
from rtmig_nova.cli.output import emit, print_json
from rtmig_nova.cli.reports import (
    reserve_apply_lines, reserve_release_lines, reserve_show_lines)

DEFAULT_URI = "qemu:///system"
# libvirt's default port range of QEMU's migration stream (the same as
# rtmig_nova.enforce.netshape.MIGRATION_PORTS, which is not imported here).
DEFAULT_MIGRATION_PORTS = (49152, 49215)
# The limits libvirt and the kernel put on CFS bandwidth, microseconds
# (rtmig_nova.bounds states them).
CFS_PERIOD_US = (int(bounds.CGROUP_PERIOD_US.low),
                 int(bounds.CGROUP_PERIOD_US.high))
CFS_MIN_QUOTA_US = int(bounds.CGROUP_QUOTA_US.low)
# A label is kept in the state file, which is read back under a size limit.
MAX_LABEL = 1000

_PORTS = re.compile(r"^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$")


# -- phase 1: the options (pure) ---------------------------------------------

@dataclasses.dataclass
class PlanValues:
    """What ``reserve apply`` takes from a plan document."""
    bandwidth: float            # bytes/s
    downtime_limit: float       # s
    quota_us: int
    cgroup_period_us: int
    runtime_ns: int
    deadline_ns: int
    period_ns: int
    qemu_version: str = None    # "MAJOR.MINOR" it was made for, if said


@dataclasses.dataclass
class Request:
    """A checked ``reserve apply`` request, in the enforcement layer's
    units."""
    domain: str
    uri: str
    bandwidth: float            # bytes/s
    downtime_limit: float       # s
    cpu: dict                   # libvirt CPU_PARAMS, us
    threads: list               # explicit --deadline-thread ids
    vcpus: bool                 # --deadline-vcpus
    deadline: tuple | None      # (runtime_ns, deadline_ns, period_ns)
    shaping: dict | None        # ifname, netns, link_rate, ports, peer
    label: str
    state_dir: str
    plan_qemu: str = None       # the --plan's QEMU release, if it says
    deadline_reclaim: bool = False   # --deadline-reclaim


def _plan_number(doc, key, where, kind, bound):
    node = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise CliError(f"--plan: {where}: not a plan (the JSON of "
                           f"'rtmig plan --json'): no {key!r}")
        node = node[part]
    if kind is int:
        ok = isinstance(node, int) and not isinstance(node, bool) \
            and node > 0
    else:
        # math.isfinite() of a huge JSON integer overflows: ints are finite
        # (and bounded below).
        ok = isinstance(node, (int, float)) and not isinstance(node, bool) \
            and (isinstance(node, int) or math.isfinite(node)) and node > 0
    if not ok:
        what = "a whole number > 0" if kind is int else "a number > 0"
        raise CliError(f"--plan: {where}: {key} must be {what}, got "
                       f"{json.dumps(node)[:60]}")
    bound.check(node, f"--plan: {where}: {key}")
    return node


def read_plan(path):
    """The :class:`PlanValues` of a ``rtmig plan --json`` document in
    ``path`` (``-``: standard input); an infeasible plan is refused."""
    where = "<stdin>" if path == "-" else path
    limit = bounds.MAX_DOCUMENT_BYTES
    try:
        if path == "-":
            data = safeio.read_stream(sys.stdin.buffer, where, limit)
        else:
            data = safeio.read_file(os.path.expanduser(path), limit, where)
        doc = safeio.loads_json(data, where)
    except OSError as e:
        raise CliError(f"--plan: {os_error_message(e)}") from None
    except safeio.ReadError as e:
        raise CliError(f"--plan: {e}") from None
    if not isinstance(doc, dict) or "feasible" not in doc:
        raise CliError(f"--plan: {where}: not a plan (the JSON of 'rtmig "
                       f"plan --json')")
    if doc["feasible"] is not True:
        reason = doc.get("reason") or "no reason given"
        if not isinstance(reason, str):
            reason = "no reason given"
        raise CliError(f"--plan: {where}: the plan is infeasible "
                       f"({reason[:300]}); nothing applied")
    return PlanValues(
        bandwidth=float(_plan_number(doc, "bandwidth_bytes_per_s", where,
                                     float, bounds.BANDWIDTH)),
        downtime_limit=float(_plan_number(doc, "downtime_limit_s", where,
                                          float, bounds.DOWNTIME_LIMIT)),
        quota_us=_plan_number(doc, "cpu.quota_us", where, int,
                              bounds.CGROUP_QUOTA_US),
        cgroup_period_us=_plan_number(doc, "cpu.cgroup_period_us", where,
                                      int, bounds.CGROUP_PERIOD_US),
        runtime_ns=_plan_number(doc, "cpu.runtime_ns", where, int,
                                bounds.DEADLINE_TIME_NS),
        deadline_ns=_plan_number(doc, "cpu.deadline_ns", where, int,
                                 bounds.DEADLINE_TIME_NS),
        period_ns=_plan_number(doc, "cpu.period_ns", where, int,
                               bounds.DEADLINE_TIME_NS),
        qemu_version=_plan_qemu(doc, where))


def _plan_qemu(doc, where):
    """The QEMU release a plan document was made for (its
    request.settings.qemu_version), or None if it does not say."""
    from rtmig_nova.model import precopy
    request = doc.get("request")
    settings = request.get("settings") if isinstance(request, dict) \
        else None
    value = settings.get("qemu_version") if isinstance(settings, dict) \
        else None
    if value is None:
        return None
    try:
        return precopy.qemu_version(value)
    except ValueError as e:
        raise CliError(f"--plan: {where}: request.settings.qemu_version: "
                       f"{e}") from None


def _positive_duration(text, name):
    value = units.parse_duration(text, name)
    if not value > 0:
        raise CliError(f"{name}: must be > 0, got {text!r}")
    return value


def _whole(text, name, scale, bound):
    """A duration option as a whole number of 1/``scale`` s (rounded to
    the nearest) inside ``bound``; checked before rounding, where a huge
    value would overflow."""
    n = _positive_duration(text, name) * scale
    if not bound.contains(n):
        bound.check(n, name, text)
    return bound.check(int(round(n)), name, text)


def _us(text, name, bound=bounds.CGROUP_QUOTA_US):
    """A duration option as whole microseconds."""
    return _whole(text, name, 1e6, bound)


def _ns(text, name):
    """A duration option as whole nanoseconds."""
    return _whole(text, name, 1e9, bounds.DEADLINE_TIME_NS)


def _check_period(value, name):
    lo, hi = CFS_PERIOD_US
    if not lo <= value <= hi:
        raise CliError(f"{name}: must be 1ms..1s ({lo}..{hi} us), got "
                       f"{value} us")
    return value


def _check_quota(value, name):
    if value < CFS_MIN_QUOTA_US:
        raise CliError(f"{name}: must be at least 1ms ({CFS_MIN_QUOTA_US} "
                       f"us, the kernel's least quota), got {value} us")
    return value


def parse_ports(text):
    """``(lo, hi)`` of ``--migration-ports LO-HI`` (or one port)."""
    m = _PORTS.match(text or "")
    if m:
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if lo <= hi <= 65535:
            return lo, hi
    lo, hi = DEFAULT_MIGRATION_PORTS
    raise CliError(f"--migration-ports: invalid value {text!r}; expected "
                   f"LO-HI with 0 <= LO <= HI <= 65535, e.g. {lo}-{hi}")


def _peer(text):
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as e:
        raise CliError(f"--migration-peer: {e}") from None


def _migration(args, plan):
    bandwidth = limit = None
    if args.bandwidth is not None:
        bandwidth = bounds.BANDWIDTH.parse(args.bandwidth, "--bandwidth")
    elif plan is not None:
        bandwidth = plan.bandwidth
    if args.downtime_limit is not None:
        limit = _positive_duration(args.downtime_limit, "--downtime-limit")
        if limit < 1e-3 * (1 - 1e-9):
            raise CliError(f"--downtime-limit: must be at least 1ms (libvirt "
                           f"sets whole ms), got {args.downtime_limit!r}")
        bounds.DOWNTIME_LIMIT.check(limit, "--downtime-limit",
                                    args.downtime_limit)
    elif plan is not None:
        limit = plan.downtime_limit
    for value, option in ((bandwidth, "--bandwidth"),
                          (limit, "--downtime-limit")):
        if value is None:
            raise CliError(f"{option}: required without --plan")
    return bandwidth, limit


def _cpu(args, plan, defaults):
    """libvirt's CPU parameters (us) of the emulator and vCPU cgroups."""
    params = {}
    for prefix, plan_quota, plan_period in (
            ("emulator", plan.quota_us if plan else None,
             plan.cgroup_period_us if plan else None),
            ("vcpu", None, None)):
        quota_opt, period_opt = f"--{prefix}-quota", f"--{prefix}-period"
        quota = getattr(args, f"{prefix}_quota")
        period = getattr(args, f"{prefix}_period")
        quota = _us(quota, quota_opt) if quota is not None else plan_quota
        # The period's own bound is checked below, with its message.
        period = _us(period, period_opt, bounds.CGROUP_QUOTA_US) \
            if period is not None else plan_period
        if quota is None:
            if period is not None:
                raise CliError(f"{period_opt}: needs {quota_opt}"
                               + (" (or --plan)" if prefix == "emulator"
                                  else ""))
            continue
        if period is None:
            period = defaults.cgroup_period
        params[f"{prefix}_period"] = _check_period(period, period_opt)
        params[f"{prefix}_quota"] = _check_quota(quota, quota_opt)
    return params


def _deadline(args, plan):
    """``(runtime_ns, deadline_ns, period_ns)`` for the deadline threads,
    or None when no thread is named."""
    options = (args.deadline_runtime, args.deadline_period,
               args.deadline_deadline)
    if not (args.deadline_thread or args.deadline_vcpus):
        if any(o is not None for o in options) or args.deadline_reclaim:
            raise CliError("--deadline-runtime, --deadline-period, "
                           "--deadline-deadline and --deadline-reclaim "
                           "need --deadline-thread or --deadline-vcpus")
        return None
    runtime = _ns(args.deadline_runtime, "--deadline-runtime") \
        if args.deadline_runtime is not None else \
        (plan.runtime_ns if plan else None)
    period = _ns(args.deadline_period, "--deadline-period") \
        if args.deadline_period is not None else \
        (plan.period_ns if plan else None)
    if args.deadline_deadline is not None:
        deadline = _ns(args.deadline_deadline, "--deadline-deadline")
    elif plan is not None and args.deadline_period is None:
        deadline = plan.deadline_ns
    else:
        deadline = period
    for value, option in ((runtime, "--deadline-runtime"),
                          (period, "--deadline-period")):
        if value is None:
            raise CliError(f"{option}: required with --deadline-thread or "
                           f"--deadline-vcpus without --plan")
    return runtime, deadline, period


def _shaping(args, bandwidth):
    if args.interface is None:
        for value, option in ((args.netns, "--netns"),
                              (args.link_capacity, "--link-capacity"),
                              (args.migration_ports, "--migration-ports"),
                              (args.migration_peer, "--migration-peer")):
            if value is not None:
                raise CliError(f"{option}: needs --interface")
        return None
    if args.link_capacity is None:
        raise CliError("--link-capacity: required with --interface")
    link = bounds.LINK_RATE.parse(args.link_capacity, "--link-capacity")
    ports = parse_ports(args.migration_ports) \
        if args.migration_ports is not None else DEFAULT_MIGRATION_PORTS
    peer = _peer(args.migration_peer) \
        if args.migration_peer is not None else None
    return {"ifname": args.interface, "netns": args.netns,
            "link_rate": link, "rate": bandwidth, "ports": ports,
            "peer": peer}


def _state_dir(args, defaults):
    state_dir = os.path.expanduser(
        args.state_dir if args.state_dir is not None
        else defaults.reservation_state_dir)
    if not state_dir:
        raise CliError("--state-dir: empty path")
    return state_dir


def build_request(args, defaults):
    """The checked :class:`Request` of ``reserve apply``'s options; a
    :class:`CliError` naming the option otherwise.  Touches nothing on the
    host but the ``--plan`` file."""
    plan = read_plan(args.plan) if args.plan is not None else None
    bandwidth, limit = _migration(args, plan)
    cpu = _cpu(args, plan, defaults)
    threads = []
    for text in args.deadline_thread or ():
        tid = bounds.THREAD_ID.parse(text, "--deadline-thread")
        if tid not in threads:
            threads.append(tid)
    deadline = _deadline(args, plan)
    shaping = _shaping(args, bandwidth)
    state_dir = _state_dir(args, defaults)
    if len(args.label or "") > MAX_LABEL:
        raise CliError(f"--label: longer than {MAX_LABEL} characters")
    return Request(domain=args.domain, uri=args.uri, bandwidth=bandwidth,
                   downtime_limit=limit, cpu=cpu, threads=threads,
                   vcpus=args.deadline_vcpus, deadline=deadline,
                   shaping=shaping, label=args.label or "",
                   state_dir=state_dir,
                   plan_qemu=plan.qemu_version if plan else None,
                   deadline_reclaim=bool(args.deadline_reclaim))


# -- the enforcement layer ---------------------------------------------------

def _enforce():
    """The enforcement modules, imported on first use.  oslo.privsep
    imports eventlet, which warns on import that it is deprecated: not the
    operator's concern, and it would be more than one line on stderr."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*eventlet is "
                                                  r"deprecated")
        from rtmig_nova.enforce import deadline
        from rtmig_nova.enforce import libvirt_controls
        from rtmig_nova.enforce import netshape
        from rtmig_nova.enforce import privileged
        from rtmig_nova.enforce import reservation
    _quiet_libvirt()
    return types.SimpleNamespace(
        deadline=deadline, libvirt_controls=libvirt_controls,
        netshape=netshape, privileged=privileged, reservation=reservation)


def _ignore_libvirt_error(_context, _error):
    pass


def _quiet_libvirt():
    """libvirt's default error handler prints every error on stderr, even
    one that is handled (a lookup by name before the one by UUID); the
    command reports its errors itself, in one line."""
    try:
        import libvirt
    except ImportError:
        return          # libvirt_controls says so when it is needed
    libvirt.registerErrorHandler(_ignore_libvirt_error, None)


@contextlib.contextmanager
def _enforce_errors(enf):
    """The enforcement layer's RuntimeErrors as one-line CliErrors (its
    ValueErrors and OSErrors are handled by the entry point)."""
    try:
        yield
    except (enf.reservation.ReservationError,
            enf.netshape.NetShapeError, NotImplementedError) as e:
        raise CliError(str(e)) from None


# -- phase 2: the host -------------------------------------------------------

def _host_checks(req, enf):
    """Check the request against the host; returns (deadline thread ids,
    ShapingPlan or None).  Changes nothing."""
    lc = enf.libvirt_controls
    conn = lc.connect(req.uri)
    try:
        try:
            dom = lc.lookup(conn, req.domain)
        except lc.LibvirtError as e:
            raise CliError(f"--domain: {e}") from None
        # the HTB class carries what this host's QEMU sends; a plan made
        # for a QEMU that counts its rate limit otherwise is refused
        host_qemu = lc.hypervisor_version(dom)
        _check_plan_qemu(req, host_qemu)
        threads = list(req.threads)
        if req.vcpus:
            try:
                vcpus = lc.vcpu_threads(dom)
            except lc.LibvirtError as e:
                raise CliError(f"--deadline-vcpus: {e}") from None
            if not vcpus:
                raise CliError(f"--deadline-vcpus: no vCPU threads found "
                               f"in the QEMU of {req.domain!r}")
            threads += [t for t in vcpus if t not in threads]
    finally:
        conn.close()
    if req.deadline is not None:
        try:
            enf.deadline.validate_deadline(*req.deadline)
        except ValueError as e:
            raise CliError(f"SCHED_DEADLINE: {e}") from None
        for tid in req.threads:
            try:
                enf.deadline.get_attr(tid)
            except ValueError as e:
                raise CliError(f"--deadline-thread: {e}") from None
    plan = None
    if req.shaping is not None:
        s = req.shaping
        plan = enf.reservation.migration_shaping(
            s["ifname"], s["link_rate"], s["rate"], s["ports"], s["peer"],
            s["netns"], qemu_version=host_qemu)
        try:
            enf.netshape.validate(plan)
        except ValueError as e:
            raise CliError(f"shaping: {e}") from None
    return threads, plan


def _check_plan_qemu(req, host_qemu):
    from rtmig_nova.model import precopy
    if req.plan_qemu is None or host_qemu is None:
        return
    host = precopy.qemu_version(host_qemu)
    if precopy.pages_per_count(host) != precopy.pages_per_count(
            req.plan_qemu):
        raise CliError(
            f"--plan: made for QEMU {req.plan_qemu}, but {req.domain!r} runs "
            f"on QEMU {host}, whose rate limit sends another rate (its CPU "
            f"and downtime limit would not hold): plan again with "
            f"--qemu-version {host}")


def _steps(req, threads, plan, enf):
    return enf.reservation.migration_steps(
        req.uri, req.domain, req.bandwidth, req.downtime_limit, cpu=req.cpu,
        deadline=req.deadline, threads=threads, shaping=plan,
        deadline_flags=enf.deadline.SCHED_FLAG_RECLAIM
        if req.deadline_reclaim else 0)


def _apply(res, enf):
    """``res.apply()``; interrupted, it undoes what it had applied."""
    try:
        return res.apply()
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            enf.reservation.release(res.ident, res.state_dir)
        raise


# -- commands ----------------------------------------------------------------

def cmd_reserve_apply(args, defaults):
    req = build_request(args, defaults)
    enf = _enforce()
    with _enforce_errors(enf), enf.privileged.in_process_as_root():
        threads, plan = _host_checks(req, enf)
        steps = _steps(req, threads, plan, enf)
        res = enf.reservation.Reservation(steps, req.state_dir,
                                          label=req.label)
        ident = _apply(res, enf)
    if args.json:
        print_json({"id": ident, "label": req.label,
                    "state_file": res.path,
                    "applied": [kind for kind, _ in res.applied]})
        return EXIT_OK
    emit(reserve_apply_lines(ident, req.label, res.path, req.domain,
                             req.uri, steps))
    return EXIT_OK


def _document(doc, state_dir):
    """A state document as ``reserve show --json`` reports it."""
    return {"id": doc["id"], "label": doc.get("label", ""),
            "created": doc.get("created"),
            "state_file": os.path.join(state_dir, doc["id"] + ".json"),
            "steps": [{"kind": s.get("kind"), "record": s.get("record")}
                      for s in doc["applied"]]}


def _refused(refused):
    """Refused state files as ``reserve show --json`` reports them."""
    return [{"state_file": r.path, "reason": r.reason} for r in refused]


def cmd_reserve_show(args, defaults):
    state_dir = _state_dir(args, defaults)
    enf = _enforce()
    with _enforce_errors(enf):
        found, refused = enf.reservation.scan(state_dir)
    docs = [_document(d, state_dir) for d in found]
    docs.sort(key=lambda d: (d["created"] or 0, d["id"]))
    if args.json:
        print_json({"state_dir": state_dir, "reservations": docs,
                    "refused": _refused(refused)})
        return EXIT_OK
    emit(reserve_show_lines(state_dir, docs, enf.deadline.POLICY_NAMES,
                            _refused(refused)))
    return EXIT_OK


def cmd_reserve_release(args, defaults):
    if args.all == (args.id is not None):
        raise CliError("give a reservation ID or --all (not both)"
                       if args.all else "give a reservation ID or --all")
    state_dir = _state_dir(args, defaults)
    enf = _enforce()
    rsv = enf.reservation
    with _enforce_errors(enf), enf.privileged.in_process_as_root():
        if args.id is not None:
            rsv.check_ident(args.id)
        found, refused = rsv.scan(state_dir)
        docs = {d["id"]: _document(d, state_dir) for d in found}
        if args.all:
            released = rsv.recover(state_dir)
        else:
            released = [args.id] if rsv.release(args.id, state_dir) else []
    if args.all and refused:
        # Released what could be read; the rest is an error to repair.
        more = f" (and {len(refused) - 1} more: see rtmig reserve show)" \
            if len(refused) > 1 else ""
        raise CliError(f"released {', '.join(released) or 'nothing'}; not "
                       f"released: {refused[0]}{more}")
    if args.json:
        print_json({"state_dir": state_dir, "released": released})
        return EXIT_OK
    emit(reserve_release_lines(state_dir, args.id, released, docs))
    return EXIT_OK
