"""A migration's reservations, applied all or nothing and always removed.

A :class:`Reservation` is a list of steps, each changing one thing on the
host (libvirt migration settings, libvirt CPU bandwidth, SCHED_DEADLINE on a
thread, an HTB hierarchy).  ``apply`` runs them in order and, if one fails,
undoes the ones before it in reverse order.  ``release`` undoes them all.

Before a step changes anything, its *undo record* (plain JSON: what to
restore and where: the previous values) is written to a state file, so a
service that crashed mid-way finds the file on restart and :func:`recover`
puts everything back.  Undo is idempotent and harmless for a step that had
not happened yet: it restores the values that were there before.
"""

import dataclasses
import json
import os
import re
import tempfile
import time
import uuid

from oslo_log import log as logging

from rtmig_nova import bounds
from rtmig_nova import safeio
from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import libvirt_controls
from rtmig_nova.enforce import netshape
from rtmig_nova.enforce import send_queue

LOG = logging.getLogger(__name__)
DEFAULT_STATE_DIR = "/var/lib/rtmig-nova/reservations"
STATE_VERSION = 1
# A reservation id names its state file, ID.json; ids made here are
# uuid4().hex.
MAX_IDENT = 128
_IDENT = re.compile(r"[A-Za-z0-9_-]{1,%d}" % MAX_IDENT, re.ASCII)


class ReservationError(RuntimeError):
    """Applying or releasing failed; the message is one line."""


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


# -- steps -----------------------------------------------------------------
# prepare() reads what the step will change and returns the undo record;
# apply() changes it; undo(record) restores from the record alone (so it
# works in a new process after a crash).  The libvirt steps open their
# connection with ``connect(uri)``: libvirt_controls.connect unless given
# (Nova's driver passes its own connection, which Nova's tests fake).

@dataclasses.dataclass
class MigrationStep:
    """libvirt migration speed (bytes/s) and maximum downtime (s)."""
    uri: str
    domain: str
    bandwidth: float
    max_downtime: float
    connect: object = dataclasses.field(default=None, repr=False,
                                        compare=False)
    kind = "migration"

    def prepare(self):
        dom = _domain(self.uri, self.domain, connect=self.connect)
        speed, downtime = libvirt_controls.get_migration(dom)
        return {"uri": self.uri, "domain": dom.UUIDString(),
                "bandwidth": speed, "max_downtime": downtime}

    def apply(self):
        libvirt_controls.set_migration(
            _domain(self.uri, self.domain, connect=self.connect),
            self.bandwidth, self.max_downtime)

    @staticmethod
    def undo(record, connect=None):
        dom = _domain(record["uri"], record["domain"], missing_ok=True,
                      connect=connect)
        if dom is not None:
            # a value libvirt reported as 0 cannot be set back: left as is
            libvirt_controls.set_migration(
                dom, record["bandwidth"] or None,
                record["max_downtime"] or None)


@dataclasses.dataclass
class CpuStep:
    """libvirt CFS bandwidth of the domain's cgroups (us; see
    :data:`libvirt_controls.CPU_PARAMS`): the vCPUs' and the emulator's,
    which holds QEMU's migration thread."""
    uri: str
    domain: str
    params: dict
    connect: object = dataclasses.field(default=None, repr=False,
                                        compare=False)
    kind = "cpu"

    def prepare(self):
        dom = _domain(self.uri, self.domain, connect=self.connect)
        before = libvirt_controls.get_cpu(dom)
        return {"uri": self.uri, "domain": dom.UUIDString(),
                "params": {k: before[k] for k in self.params
                           if k in before}}

    def apply(self):
        libvirt_controls.set_cpu(
            _domain(self.uri, self.domain, connect=self.connect),
            **self.params)

    @staticmethod
    def undo(record, connect=None):
        dom = _domain(record["uri"], record["domain"], missing_ok=True,
                      connect=connect)
        if dom is not None:
            libvirt_controls.set_cpu(dom, **record["params"])


@dataclasses.dataclass
class DeadlineStep:
    """SCHED_DEADLINE on one thread (ns), with ``SCHED_FLAG_*`` ``flags``
    (0, or :data:`deadline.SCHED_FLAG_RECLAIM`)."""
    tid: int
    runtime_ns: int
    deadline_ns: int
    period_ns: int
    flags: int = 0
    kind = "deadline"

    def prepare(self):
        deadline.validate_deadline(self.runtime_ns, self.deadline_ns,
                                   self.period_ns)
        deadline.validate_flags(self.flags)
        return {"tid": self.tid, "start": _thread_start(self.tid),
                "previous": list(deadline.get_attr(self.tid).as_tuple())}

    def apply(self):
        deadline.apply_deadline(
            self.tid, (self.runtime_ns, self.deadline_ns, self.period_ns),
            self.flags)

    @staticmethod
    def undo(record, connect=None):
        # A thread id can be reused after its thread ended: only restore the
        # thread that was changed (same start time).
        if _thread_start(record["tid"], missing_ok=True) != record["start"]:
            return
        try:
            deadline.restore(record["tid"],
                             deadline.SchedAttr(*record["previous"]))
        except deadline.NoSuchThread:
            pass


@dataclasses.dataclass
class ShapingStep:
    """An HTB hierarchy on the migration interface."""
    plan: netshape.ShapingPlan
    kind = "shaping"

    def prepare(self):
        netshape.validate(self.plan)
        return {"ifname": self.plan.ifname, "netns": self.plan.netns}

    def apply(self):
        netshape.apply_plan(self.plan)

    @staticmethod
    def undo(record, connect=None):
        try:
            netshape.remove(record["ifname"], record["netns"])
        except ValueError:
            pass            # the interface or namespace is gone


@dataclasses.dataclass
class ShapingRateStep:
    """New rates (bytes/s) for the classes of an HTB hierarchy already in
    place whose rates follow the migration's
    (:func:`netshape.migration_rates`): a running migration's bandwidth
    raised without rebuilding the hierarchy."""
    ifname: str
    netns: str
    rates: dict
    kind = "shaping-rate"

    def prepare(self):
        rows = netshape.show(self.ifname, self.netns)
        if rows is None:
            raise ReservationError(f"{self.ifname} carries no rtmig HTB to "
                                   f"change")
        roles = {r["role"]: [r["rate"], r["ceil"]] for r in rows}
        return {"ifname": self.ifname, "netns": self.netns,
                "rates": {k: roles[k] for k in self.rates if k in roles}}

    def apply(self):
        netshape.set_rates(self.ifname, self.netns, self.rates)

    @staticmethod
    def undo(record, connect=None):
        try:
            netshape.set_rates(record["ifname"], record["netns"],
                               record["rates"])
        except ValueError:
            pass            # the interface or namespace is gone


@dataclasses.dataclass
class SendQueueStep:
    """A cap of ``cap`` unsent bytes and a pacing rate of ``pacing``
    bytes/s of payload (each None: left as it is) on the TCP connections
    of QEMU process ``pid`` to ``peer`` (None: any address) at ports
    ``ports`` = (lo, hi): a running migration's outgoing stream
    (:mod:`send_queue`)."""
    pid: int
    peer: str
    ports: tuple
    cap: int
    pacing: float = None
    # the connections prepare() found and recorded (read_caps' rows):
    # apply() changes these, and only these
    sockets: list = dataclasses.field(default=None, init=False, repr=False,
                                      compare=False)
    kind = "send-queue"

    def prepare(self):
        if self.cap is not None:
            send_queue.check_cap(self.cap)
        if self.pacing is not None:
            send_queue.check_pacing(self.pacing)
        start = _thread_start(self.pid, missing_ok=True)
        if start is None:
            raise ReservationError(f"QEMU process {self.pid} is gone")
        self.sockets = send_queue.read_caps(self.pid, self.peer,
                                            list(self.ports))
        if not self.sockets:
            raise ReservationError(
                f"process {self.pid} has no connection to "
                f"{self.peer or 'any address'} at ports "
                f"{self.ports[0]}-{self.ports[1]}")
        return {"pid": self.pid, "start": start, "sockets": self.sockets}

    def apply(self):
        send_queue.set_caps(self.pid, self.sockets, self.cap,
                            None if self.pacing is None
                            else int(self.pacing))

    @staticmethod
    def undo(record, connect=None):
        # a pid reused by another process is not QEMU's: nothing to undo
        if _thread_start(record["pid"], missing_ok=True) != record["start"]:
            return
        send_queue.set_caps(record["pid"], record["sockets"])


STEP_KINDS = {cls.kind: cls for cls in
              (MigrationStep, CpuStep, DeadlineStep, ShapingStep,
               ShapingRateStep, SendQueueStep)}


def migration_steps(uri, domain, bandwidth, max_downtime, cpu=None,
                    deadline=None, threads=(), shaping=None, connect=None,
                    deadline_flags=0):
    """The steps of a migration's reservation on one host, in the order
    they are applied: libvirt's migration speed (bytes/s) and maximum
    downtime (s) of ``domain``; the CFS bandwidth of its cgroups (``cpu``:
    libvirt's :data:`~libvirt_controls.CPU_PARAMS`, us); SCHED_DEADLINE
    ``deadline`` = (runtime, deadline, period) ns with ``SCHED_FLAG_*``
    ``deadline_flags`` on each of ``threads``;
    the HTB ``shaping`` plan (a :class:`~netshape.ShapingPlan`).  The one
    place a plan becomes steps: ``rtmig reserve apply`` and the Nova driver
    both call it."""
    steps = [MigrationStep(uri, domain, bandwidth, max_downtime,
                           connect=connect)]
    if cpu:
        steps.append(CpuStep(uri, domain, dict(cpu), connect=connect))
    if deadline is not None:
        steps += deadline_steps(threads, deadline, deadline_flags)
    if shaping is not None:
        steps.append(ShapingStep(shaping))
    return steps


def migration_shaping(ifname, link_rate, bandwidth, ports, peer=None,
                      netns=None, page_size=4096, qemu_version=None):
    """The :class:`~netshape.ShapingPlan` that gives a migration limited to
    ``bandwidth`` bytes/s its HTB class on ``ifname`` (in ``netns``) of a
    ``link_rate`` bytes/s link: what QEMU ``qemu_version`` (None: the
    models' default) sends under that limit (more:
    :func:`~rtmig_nova.model.precopy.send_rate`) in whole frames, at
    most the link, for the packets to destination ports ``ports`` = (lo,
    hi) and, if given, to ``peer`` (an address or prefix).  A bandwidth
    above the link stays as it is, for :func:`netshape.validate` to
    refuse.  Used by ``rtmig reserve`` and the Nova driver."""
    rate = bandwidth
    if bandwidth <= link_rate:
        from rtmig_nova.model import precopy   # numpy: only here
        rate = min(netshape.frame_rate(precopy.send_rate(
            bandwidth, page_size, qemu_version=qemu_version
            or precopy.DEFAULT_QEMU_VERSION)), link_rate)
    return netshape.ShapingPlan(
        ifname=ifname, netns=netns, link_rate=link_rate,
        migration=netshape.TrafficClass(
            "migration", rate,
            match=netshape.Match(dst_ports=tuple(ports), peer=peer)))


def running_migration_steps(dom, thread_deadline=None, send_cap=None,
                            peer=None, ports=netshape.MIGRATION_PORTS,
                            pacing=None, thread_flags=0):
    """The steps of a migration's reservation that need it running, on
    the source: SCHED_DEADLINE ``thread_deadline`` = (runtime, deadline,
    period) ns with ``SCHED_FLAG_*`` ``thread_flags`` (0, or
    :data:`deadline.SCHED_FLAG_RECLAIM`: the runtime is a guarantee, not a
    cap) on QEMU's migration thread, and a cap of ``send_cap``
    unsent bytes on its stream to ``peer`` at ``ports`` = (lo, hi), paced
    at ``pacing`` bytes/s of payload (None: not paced; the rate of its
    HTB class, :func:`migration_pacing`) (:class:`SendQueueStep`).  []
    while the libvirt domain ``dom`` has no migration thread yet (QEMU
    starts it once the stream is connected).
    ``rtmig reserve``'s testbed runs and the Nova driver both call it."""
    tids = libvirt_controls.migration_threads(dom)
    if not tids:
        return []
    steps = []
    if thread_deadline is not None:
        steps += deadline_steps(tids, thread_deadline, thread_flags)
    if send_cap or pacing:
        steps.append(SendQueueStep(libvirt_controls.qemu_pid(dom), peer,
                                   tuple(ports), send_cap or None, pacing))
    return steps


def migration_pacing(shaping):
    """Bytes/s of TCP payload the migration class of ``shaping`` (a
    :class:`~netshape.ShapingPlan` of :func:`migration_shaping`) lets
    through: the rate to pace the migration's stream at, so that its
    segments leave no faster than the class sends them."""
    return netshape.payload_rate(shaping.migration.rate)


def deadline_steps(threads, deadline, flags=0):
    """SCHED_DEADLINE ``deadline`` = (runtime, deadline, period) ns with
    ``SCHED_FLAG_*`` ``flags`` on each of ``threads`` (thread ids)."""
    runtime, dl, period = deadline
    return [DeadlineStep(tid, runtime, dl, period, flags)
            for tid in threads]


def migration_thread_deadline(cpu):
    """(runtime, deadline, period) ns of a plan's
    :class:`~rtmig_nova.model.sizing.CpuReservation` ``cpu``, as
    :func:`deadline_steps` takes it."""
    return int(cpu.runtime_ns), int(cpu.deadline_ns), int(cpu.period_ns)


def migration_thread_cpu(cpu):
    """libvirt CPU parameters (us) that give the emulator cgroup, where
    QEMU's migration thread runs, the CPU of a plan's
    :class:`~rtmig_nova.model.sizing.CpuReservation` ``cpu``."""
    return {"emulator_period": int(cpu.cgroup_period_us),
            "emulator_quota": int(cpu.quota_us)}


def _domain(uri, domain, missing_ok=False, connect=None):
    conn = (connect or libvirt_controls.connect)(uri)
    try:
        return libvirt_controls.lookup(conn, domain)
    except libvirt_controls.LibvirtError:
        if missing_ok:
            return None     # the domain is gone: nothing left to restore
        raise


def _thread_start(tid, missing_ok=False):
    """Start time of a thread (clock ticks since boot, /proc stat field
    22), which tells a thread from a later one with the same id."""
    try:
        with open(f"/proc/{int(tid)}/stat") as f:
            stat = f.read()
    except (OSError, ValueError):
        if missing_ok:
            return None
        raise ValueError(f"no thread {tid!r}") from None
    return int(stat.rsplit(")", 1)[1].split()[19])


# -- the transaction ---------------------------------------------------------

class Reservation:
    """Steps applied all or nothing, with a state file for recovery."""

    def __init__(self, steps, state_dir=DEFAULT_STATE_DIR, ident=None,
                 label="", connect=None):
        """``connect(uri)``: how undo connects to libvirt (the steps carry
        their own)."""
        self.connect = connect
        self.steps = list(steps)
        self.state_dir = state_dir
        self.ident = ident or uuid.uuid4().hex
        self.label = label
        self.applied = []           # [(kind, record)]

    @property
    def path(self):
        return os.path.join(self.state_dir, self.ident + ".json")

    def _save(self):
        doc = {"version": STATE_VERSION, "id": self.ident,
               "label": self.label, "created": time.time(),
               "applied": [{"kind": k, "record": r}
                           for k, r in self.applied]}
        tmp = None
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".tmp-")
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            # Named by the state file: the temporary one is ours.
            if tmp is not None:
                _remove(tmp)
            raise ReservationError(f"{self.path}: cannot write the state "
                                   f"file: {e.strerror or e}") from None

    def apply(self):
        """Apply every step, or none: on a failure undo the applied ones in
        reverse order and raise :class:`ReservationError`."""
        self._save()
        for step in self.steps:
            try:
                record = step.prepare()
                # Recorded before the change: a crash during it is undone.
                self.applied.append((step.kind, record))
                self._save()
                step.apply()
                LOG.info("reservation %s: applied %s %s", self.ident,
                         step.kind, record)
            except Exception as exc:
                undone, left = _undo_all(self.applied, self.connect)
                self.applied = left
                if left:
                    self._save()
                else:
                    _remove(self.path)
                msg = (f"step {step.kind!r} failed: {_one_line(exc)}; "
                       f"undone: {', '.join(undone) or 'nothing'}")
                if left:
                    msg += (f"; could not undo: "
                            f"{', '.join(k for k, _ in left)} (kept in "
                            f"{self.path})")
                LOG.warning("reservation %s: %s", self.ident, msg)
                raise ReservationError(msg) from None
        return self.ident


def _undo_all(applied, connect=None):
    """Undo records in reverse order; returns (kinds undone, records that
    could not be undone)."""
    undone, left = [], []
    for kind, record in reversed(applied):
        try:
            STEP_KINDS[kind].undo(record, connect)
            undone.append(kind)
            LOG.info("undid %s %s", kind, record)
        except Exception as exc:
            LOG.error("could not undo %s %s: %s", kind, record,
                      _one_line(exc))
            left.insert(0, (kind, record))
    return undone, left


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@dataclasses.dataclass(frozen=True)
class Refused:
    """A state file :func:`scan` could not take: its path and why (one
    line).  Its reservation is neither shown nor released until the file is
    repaired or removed by hand."""
    path: str
    reason: str

    def __str__(self):
        return f"{self.path}: {self.reason}"


def scan(state_dir=DEFAULT_STATE_DIR):
    """The reservations recorded in ``state_dir``: ``(docs, refused)``, the
    state documents (id, label, created, applied steps) of the files that
    read, and a :class:`Refused` for each ``*.json`` file that does not (too
    large, not JSON, not a state document...).  One bad file never hides
    the others.

    :raises ReservationError: ``state_dir`` exists but cannot be listed
    """
    docs, refused = [], []
    try:
        names = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        return docs, refused
    except (OSError, ValueError) as e:
        raise ReservationError(f"{state_dir}: cannot list the state "
                               f"directory ({_reason(e)})") from None
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(state_dir, name)
        try:
            doc = _read(path, name[:-len(".json")])
        except _Unreadable as e:
            refused.append(Refused(path, str(e)))
            continue
        if doc is not None:
            docs.append(doc)
    return docs, refused


def load(state_dir=DEFAULT_STATE_DIR):
    """The state documents :func:`scan` reads; each refused file is logged
    (a warning naming it and why) and skipped.

    :raises ReservationError: ``state_dir`` exists but cannot be listed
    """
    docs, refused = scan(state_dir)
    for r in refused:
        LOG.warning("reservation state file %s skipped: %s", r.path,
                    r.reason)
    return docs


class _Unreadable(Exception):
    """Why a state file cannot be taken (one line)."""


def _reason(e):
    if isinstance(e, OSError):
        return e.strerror or _one_line(e)
    return _one_line(e)


def _read(path, ident):
    """The state document in ``path`` (``ident``.json), ``None`` if the
    file is gone (released meanwhile), or :class:`_Unreadable`."""
    try:
        check_ident(ident)
    except ReservationError:
        raise _Unreadable("its name is no reservation id") from None
    try:
        doc = safeio.loads_json(
            safeio.read_file(path, bounds.MAX_DOCUMENT_BYTES), path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _Unreadable(f"unreadable state file ({_reason(e)})") from None
    except safeio.ReadError as e:
        raise _Unreadable(f"unreadable state file ({e.reason})") from None
    why = _malformed(doc, ident)
    if why:
        raise _Unreadable(f"not a reservation state file ({why})")
    return doc


def _malformed(doc, ident):
    """Why ``doc`` (read from ``ident``.json) is no state document, or
    ``""``: what show and release read from it is checked here, so that
    they never meet a wrong type."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("version") != STATE_VERSION:
        return f"version is not {STATE_VERSION}"
    if doc.get("id") != ident:
        return "its id is not its file name"
    if not isinstance(doc.get("label", ""), str):
        return "label is not a string"
    created = doc.get("created")
    if created is not None and (isinstance(created, bool) or
                                not isinstance(created, (int, float))):
        return "created is not a number"
    applied = doc.get("applied")
    if not isinstance(applied, list):
        return "applied is not a list"
    for step in applied:
        if not isinstance(step, dict) or \
                step.get("kind") not in STEP_KINDS or \
                not isinstance(step.get("record"), dict):
            return ("applied holds a step that is not {kind: one of "
                    f"{', '.join(STEP_KINDS)}, record: {{...}}}}")
    return ""


def check_ident(ident):
    """``ident`` if it can be a reservation id (what names its state file,
    ``ident``.json); :class:`ReservationError` otherwise."""
    if not isinstance(ident, str) or not _IDENT.fullmatch(ident):
        shown = repr(ident[:60]) if isinstance(ident, str) else repr(ident)
        raise ReservationError(
            f"{shown} is no reservation id (1 to {MAX_IDENT} letters, "
            f"digits, '-' or '_')")
    return ident


def release(ident, state_dir=DEFAULT_STATE_DIR, connect=None):
    """Undo the reservation ``ident`` (libvirt through ``connect(uri)``, see
    the steps).  Idempotent: ``False`` if there is no such reservation
    (already released).  Only its own state file is read: another bad file
    in ``state_dir`` does not stop it.

    :raises ReservationError: ``ident`` is no reservation id, its state
        file cannot be read, or a step could not be undone
    """
    path = os.path.join(state_dir, check_ident(ident) + ".json")
    try:
        doc = _read(path, ident)
    except _Unreadable as e:
        raise ReservationError(f"{path}: {e}") from None
    except ValueError as e:           # a NUL in state_dir
        raise ReservationError(f"{state_dir!r}: {_one_line(e)}") from None
    if doc is None:
        return False
    applied = [(s["kind"], s["record"]) for s in doc["applied"]]
    undone, left = _undo_all(applied, connect)
    if left:
        res = Reservation([], state_dir, ident, doc.get("label", ""))
        res.applied = left
        res._save()
        raise ReservationError(
            f"reservation {ident}: could not undo "
            f"{', '.join(k for k, _ in left)}; undone: "
            f"{', '.join(undone) or 'nothing'}")
    _remove(path)
    return True


def recover(state_dir=DEFAULT_STATE_DIR, connect=None, label_prefix=None):
    """Undo every reservation a crashed run left recorded (only those whose
    label starts with ``label_prefix``, if given); returns their ids.  A
    state file that cannot be read is logged and skipped (:func:`load`);
    :func:`scan` lists them.

    :raises ReservationError: some could not be released (what could not
        be undone stays recorded); the others were, and the message names
        both
    """
    done, failed = [], []
    for doc in load(state_dir):
        if label_prefix is not None and \
                not doc.get("label", "").startswith(label_prefix):
            continue
        try:
            release(doc["id"], state_dir, connect)
        except ReservationError as e:
            failed.append(str(e))   # the next one is no less to undo
            continue
        done.append(doc["id"])
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise ReservationError(f"released {', '.join(done) or 'nothing'}; "
                               f"{failed[0]}{more}")
    return done
