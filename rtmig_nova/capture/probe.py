"""Capture the dirty page profile of a running, unmodified guest.

A *probe migration* is a pre-copy migration that is never meant to finish:
it is throttled (``max-bandwidth``, default 8 MB/s), has a 1 ms
``downtime-limit`` (QEMU syncs the dirty bitmap again only when every dirty
page has been sent) and sends its stream into a sink on this host that
throws it away.  With the trace events ``migration_bitmap_sync_end``,
``ram_save_page`` and ``migration_thread_low_pending`` enabled, QEMU's
``log`` trace backend writes one line per sync, per page sent and at the
switch-over to its stderr; :class:`~rtmig_nova.capture.trace.TraceParser`
turns the rounds into observations, and
:meth:`DirtyProfile.from_observations` into a profile.  After the duration
the migration is cancelled, and the migration parameters, the capability
and the trace event states are put back as they were.  The profile's
metadata names the QEMU (``qemu_version``, from ``query-version``): under
TCG, QEMU 7.2 loses writes to pages the vCPU keeps writing, which QEMU 10
tracks (docs/testbed.md), so the same guest gives different profiles.

The guest is either a libvirt domain (:func:`capture_domain`: QMP through
``libvirt_qemu.qemuMonitorCommand``, QEMU's stderr is the domain's log file
``/var/log/libvirt/qemu/NAME.log``, written by virtlogd, which rotates it)
or a plain QEMU (:func:`capture_qmp`: a QMP unix socket, and the
``-trace file=PATH`` the user started it with).  QEMU must run with
``-msg timestamp=on`` (libvirt passes it).

The sink is a TCP listener on 127.0.0.1, not ``exec:cat > /dev/null``:
libvirt starts QEMU with ``-sandbox ...,spawn=deny``, under which the fork
of an ``exec:`` migration kills QEMU, i.e. the guest.  The capability
``pause-before-switchover`` is turned on for the probe: should the guest
dirty so few pages that the probe converges, QEMU stops in
``pre-switchover`` and the cancel resumes the guest, rather than completing
a migration that would leave the guest paused; the capture then starts the
next probe (see :func:`capture`).

Every error is a :class:`ProbeError` with a one-line message; whatever was
changed on the guest has been undone by then (also on KeyboardInterrupt).
"""

import contextlib
import dataclasses
import json
import math
import os
import socket
import threading
import time

from rtmig_nova import bounds
from rtmig_nova.capture.trace import (
    EVENTS, MAX_PAGES, PAGE_EVENT, SYNC_EVENT, TraceError, TraceParser,
    pages_never_sent)

DEFAULT_BANDWIDTH = 8 * 1000 * 1000  # bytes/s
DOWNTIME_LIMIT_MS = 1
LIBVIRT_LOG_DIR = "/var/log/libvirt/qemu"
DEFAULT_URI = "qemu:///system"
CANCEL_TIMEOUT = 30.0               # seconds
FIRST_SYNC_TIMEOUT = 30.0           # seconds without any trace line
RUNNING = ("setup", "active", "pre-switchover", "device", "cancelling",
           "postcopy-active", "postcopy-paused", "postcopy-recover",
           "wait-unplug", "colo")
ENDED = ("cancelled", "failed", "completed", "none")


# The default schedule of a capture (capture_schedule): the first pass
# within FIRST_PASS_TARGET seconds, at no less than MIN_FIRST_PASS_RATE and
# no more than the rate whose migration thread stays within CPU_BUDGET of
# a CPU at CPU_COST_PER_PAGE (sizing's default, 2.5 us a page); then
# ROUNDS_TIME seconds of rounds at the probe bandwidth.
FIRST_PASS_TARGET = 10.0            # seconds
MIN_FIRST_PASS_RATE = 32 * 2**20    # bytes/s
CPU_BUDGET = 0.5                    # of one CPU, the probe's slowdown budget
CPU_COST_PER_PAGE = 2.5e-6          # seconds a page (sizing's default)
ROUNDS_TIME = 15.0                  # seconds
_WIRE_PAGE = 8                      # header bytes of a page on the wire


@dataclasses.dataclass(frozen=True)
class CaptureSchedule:
    """How long a capture runs and how fast it sends.

    :ivar duration: seconds in all (the probe migrations'), first pass
        included
    :ivar bandwidth: bytes/s of the rounds after the first pass
    :ivar first_pass_bandwidth: bytes/s of the first pass
    :ivar first_pass_s: the first pass's longest time, seconds (every page
        non-zero; zero pages go faster)
    :ivar cpu_share: of one CPU, the probe's migration thread at most
        (at :data:`CPU_COST_PER_PAGE`), the guest's host slowdown budget
    """
    duration: float
    bandwidth: float
    first_pass_bandwidth: float
    first_pass_s: float
    cpu_share: float

    def describe(self):
        """One line: what the capture will do and how long it takes."""
        mib = 2**20
        return (f"first pass at {self.first_pass_bandwidth / mib:.0f} MiB/s "
                f"(at most {self.first_pass_s:.1f} s, the migration thread "
                f"within {self.cpu_share:.2f} of a CPU), then rounds at "
                f"{self.bandwidth / 1e6:.3g} MB/s: {self.duration:.0f} s in "
                f"all")


def capture_schedule(memory_bytes, bandwidth=DEFAULT_BANDWIDTH,
                     duration=None, first_pass_bandwidth=None,
                     page_size=4096):
    """The :class:`CaptureSchedule` of a guest of ``memory_bytes`` bytes
    (None: not known, as 128 MiB): what is not given is chosen so that the
    first pass (the one interval it observes) is over within
    :data:`FIRST_PASS_TARGET` seconds where the CPU budget allows (from
    128 MiB to 8 GiB; beyond, the budget's rate, 820 MB/s: 84 s for 64
    GiB), and :data:`ROUNDS_TIME` seconds of rounds follow it."""
    memory = float(memory_bytes or 128 * 2**20)
    wire = (page_size + _WIRE_PAGE) / page_size
    budget_rate = CPU_BUDGET / CPU_COST_PER_PAGE * (page_size + _WIRE_PAGE)
    if first_pass_bandwidth is None:
        want = memory * wire / FIRST_PASS_TARGET
        first_pass_bandwidth = max(min(want, budget_rate),
                                   MIN_FIRST_PASS_RATE, bandwidth)
        # whole MiB/s, as an operator would give it
        first_pass_bandwidth = math.ceil(first_pass_bandwidth / 2**20) * 2**20
    first_pass_s = memory * wire / first_pass_bandwidth
    if duration is None:
        duration = math.ceil(first_pass_s + ROUNDS_TIME)
    cpu = max(first_pass_bandwidth, bandwidth) / (page_size + _WIRE_PAGE) \
        * CPU_COST_PER_PAGE
    return CaptureSchedule(float(duration), float(bandwidth),
                           float(first_pass_bandwidth), first_pass_s, cpu)


class ProbeError(RuntimeError):
    """The capture failed; the message is one line."""


class QMPCommandError(ProbeError):
    """QEMU answered a command with an error."""

    def __init__(self, command, desc):
        super().__init__(f"QMP {command}: {desc}")
        self.command = command
        self.desc = desc


def _one_line(text):
    return " ".join(str(text).split())


# -- monitors ---------------------------------------------------------------

class LibvirtMonitor:
    """QMP commands to a running libvirt domain."""

    def __init__(self, name, uri=DEFAULT_URI):
        try:
            import libvirt
            import libvirt_qemu
        except ImportError:
            raise ProbeError("libvirt-python is not installed "
                             "(pip install libvirt-python)") from None
        self._libvirt = libvirt
        self._qemu = libvirt_qemu
        try:
            self.conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise ProbeError(f"cannot connect to libvirt at {uri}: "
                             f"{_one_line(e)}") from None
        try:
            try:
                self.dom = self.conn.lookupByName(name)
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise ProbeError(f"unknown domain {name!r} at {uri}") \
                        from None
                raise ProbeError(f"domain {name!r}: {_one_line(e)}") \
                    from None
            if not self.dom.isActive():
                raise ProbeError(f"domain {name!r} is not running")
        except BaseException:
            self.conn.close()
            raise
        self.name = name
        self.uri = uri

    def cmd(self, command, **args):
        text = json.dumps({"execute": command, "arguments": args})
        try:
            reply = self._qemu.qemuMonitorCommand(self.dom, text, 0)
        except self._libvirt.libvirtError as e:
            raise ProbeError(f"QMP {command} through libvirt: "
                             f"{_one_line(e)}") from None
        msg = json.loads(reply)
        if "error" in msg:
            raise QMPCommandError(command, msg["error"].get("desc", msg))
        return msg.get("return")

    def memory_bytes(self):
        return int(self.dom.maxMemory()) * 1024

    def default_log_path(self):
        if self.uri.rstrip("/").endswith("/session"):
            return os.path.expanduser(
                f"~/.cache/libvirt/qemu/log/{self.name}.log")
        return os.path.join(LIBVIRT_LOG_DIR, f"{self.name}.log")

    def close(self):
        with contextlib.suppress(Exception):
            self.conn.close()


class QMPMonitor:
    """A small QMP client on a unix socket; every read is bounded."""

    def __init__(self, path, timeout=30.0):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
            self.file = self.sock.makefile("rb")
            greeting = self._read()
            if "QMP" not in greeting:
                raise ProbeError(f"{self.path}: not a QMP socket")
            self.cmd("qmp_capabilities")
        except OSError as e:
            self.sock.close()
            raise ProbeError(f"QMP socket {self.path}: "
                             f"{e.strerror or e}") from None
        except (ValueError, EOFError) as e:
            self.sock.close()
            raise ProbeError(f"QMP socket {self.path}: {_one_line(e)}") \
                from None
        except BaseException:
            self.sock.close()
            raise

    def _read(self):
        line = self.file.readline(1 << 20)
        if not line:
            raise EOFError("QEMU closed the QMP connection")
        return json.loads(line)

    def cmd(self, command, **args):
        msg = {"execute": command}
        if args:
            msg["arguments"] = args
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
            while True:
                reply = self._read()
                if "event" not in reply:
                    break
        except (OSError, EOFError, ValueError) as e:
            raise ProbeError(f"QMP {command}: {_one_line(e)}") from None
        if "error" in reply:
            raise QMPCommandError(command, reply["error"].get("desc", reply))
        return reply.get("return")

    def memory_bytes(self):
        try:
            return int(self.cmd("query-memory-size-summary")["base-memory"])
        except (ProbeError, KeyError, TypeError, ValueError):
            return None

    def close(self):
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


# -- the log file -----------------------------------------------------------

class LogFollower:
    """New bytes of a growing file, from its end at opening; survives
    rotation (the file renamed and a new one created: the rest of the old
    one is read first) and truncation (read again from the start)."""

    def __init__(self, path):
        self.path = str(path)
        self.rotations = 0
        self.bytes_read = 0
        self._f = self._open()
        self._f.seek(0, os.SEEK_END)

    def _open(self):
        try:
            f = open(self.path, "rb")
        except PermissionError:
            raise ProbeError(f"{self.path}: permission denied (reading "
                             f"QEMU's log needs root or the file's "
                             f"group)") from None
        except FileNotFoundError:
            raise ProbeError(f"{self.path}: no such file (QEMU's stderr, "
                             f"where its log trace backend writes)") \
                from None
        except OSError as e:
            raise ProbeError(f"{self.path}: {e.strerror or e}") from None
        st = os.fstat(f.fileno())
        self._id = (st.st_dev, st.st_ino)
        return f

    def _drain(self):
        data = self._f.read()
        self.bytes_read += len(data or b"")
        return data or b""

    def read(self):
        """The bytes written since the last call."""
        out = [self._drain()]
        try:
            st = os.stat(self.path)
        except FileNotFoundError:       # between rename and create
            return b"".join(out)
        if (st.st_dev, st.st_ino) != self._id:
            out.append(self._drain())   # the end of the rotated file
            old = self._f
            try:
                self._f = self._open()
            except ProbeError:
                return b"".join(out)    # try again on the next call
            old.close()
            self.rotations += 1
            out.append(self._drain())
        elif st.st_size < self._f.tell():
            self._f.seek(0)
            self.rotations += 1
            out.append(self._drain())
        return b"".join(out)

    def close(self):
        self._f.close()


# -- the sink ---------------------------------------------------------------

class _Sink:
    """A TCP listener on 127.0.0.1 that reads and drops what it gets, from
    one connection after another."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="rtmig-probe-sink")
        self._thread.start()

    @property
    def uri(self):
        return f"tcp:127.0.0.1:{self.port}"

    def _run(self):
        # One connection per probe migration, one after the other.
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(0.2)
                while not self._stop.is_set():
                    try:
                        data = conn.recv(1 << 20)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    self.received += len(data)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


# -- the capture ------------------------------------------------------------

@dataclasses.dataclass
class Round:
    """One observation: the pages dirtied in ``interval`` seconds."""
    index: int
    pages: int
    interval: float
    elapsed: float


@dataclasses.dataclass
class CaptureResult:
    profile: object             # DirtyProfile
    rounds: int
    intervals: list
    duration: float             # seconds the probe migration ran
    first_pass_pages: int
    bytes_sent: int
    log_rotations: int
    restored: dict              # the migration parameters put back
    other_blocks: dict
    cycles: int = 1             # probe migrations (see capture)
    schedule: object = None     # the CaptureSchedule it ran with


class _Undo:
    """Steps to undo, run last-in first-out; every step runs even when an
    earlier one fails or Ctrl-C arrives."""

    def __init__(self):
        self._steps = []

    def push(self, what, fn, *args, **kwargs):
        self._steps.append((what, fn, args, kwargs))

    def run(self):
        errors, interrupted = [], False
        while self._steps:
            what, fn, args, kwargs = self._steps.pop()
            try:
                fn(*args, **kwargs)
            except KeyboardInterrupt:
                interrupted = True
                try:
                    fn(*args, **kwargs)
                except Exception as e:
                    errors.append(f"{what}: {_one_line(e)}")
            except Exception as e:
                errors.append(f"{what}: {_one_line(e)}")
        return errors, interrupted


def _near_end_of_pass(monitor, bandwidth, lead=0.5):
    """Whether the first pass has at most ``lead`` seconds of bytes left
    at ``bandwidth`` (bytes/s): QEMU's ``ram.remaining`` counts every page
    still to send at its full size, zero pages too, so this errs early."""
    ram = (monitor.cmd("query-migrate") or {}).get("ram") or {}
    remaining = ram.get("remaining")
    return remaining is not None and ram.get("transferred", 0) > 0 and \
        remaining <= bandwidth * lead


def _status(monitor):
    return (monitor.cmd("query-migrate") or {}).get("status", "none")


def _check_trace_events(monitor):
    """{event: enabled?} before the capture; ProbeError without trace
    support."""
    state = {}
    for name in EVENTS:
        try:
            info = monitor.cmd("trace-event-get-state", name=name)
        except QMPCommandError as e:
            raise ProbeError(f"QEMU has no trace event {name} ({e.desc}): "
                             f"it needs the log trace backend") from None
        states = {i.get("state") for i in info or ()}
        if not states or states == {"unavailable"}:
            raise ProbeError(f"QEMU's trace event {name} is unavailable "
                             f"(compiled out?)")
        state[name] = "enabled" in states
    return state


def _qemu_version(monitor):
    """{"qemu_version": "MAJOR.MINOR.MICRO", "qemu_package": ...} of the
    QEMU behind ``monitor`` (what it has of them)."""
    try:
        info = monitor.cmd("query-version") or {}
    except QMPCommandError:
        return {}
    out = {}
    q = info.get("qemu") if isinstance(info, dict) else None
    if isinstance(q, dict) and all(isinstance(q.get(k), int)
                                   for k in ("major", "minor", "micro")):
        out["qemu_version"] = f"{q['major']}.{q['minor']}.{q['micro']}"
    package = info.get("package") if isinstance(info, dict) else None
    if isinstance(package, str) and package.strip():
        out["qemu_package"] = package.strip()[:200]
    return out


def _cancel(monitor, timeout=CANCEL_TIMEOUT):
    """migrate_cancel, then wait until the migration has ended."""
    if _status(monitor) in ENDED:
        return
    monitor.cmd("migrate_cancel")
    deadline = time.monotonic() + timeout
    while True:
        status = _status(monitor)
        if status in ENDED:
            return
        if time.monotonic() > deadline:
            raise ProbeError(f"migrate_cancel: status still {status!r} "
                             f"after {timeout:g} s")
        time.sleep(0.1)


def _resume_if_migrated(monitor, was_running):
    """A completed probe would leave the guest paused (postmigrate)."""
    if was_running and (monitor.cmd("query-status") or {}).get(
            "status") == "postmigrate":
        monitor.cmd("cont")


def capture(monitor, log_path, duration=None,
            bandwidth=DEFAULT_BANDWIDTH, total_pages=None, max_rounds=None,
            ram_block="pc.ram", page_size=4096, progress=None, poll=0.05,
            metadata=None, first_pass_bandwidth=None, announce=None):
    """Run probe migrations of the guest behind ``monitor`` (a
    :class:`LibvirtMonitor` or :class:`QMPMonitor`) for ``duration``
    seconds (or until ``max_rounds`` observations), reading the trace from
    ``log_path``; returns a :class:`CaptureResult`.  ``progress(Round)`` is
    called per observation.  ``total_pages`` defaults to the guest's memory
    size, else to the pages seen.

    ``bandwidth`` (bytes/s) paces the rounds after the first pass;
    ``first_pass_bandwidth`` (bytes/s) the first pass, which observes only
    one interval and should be over soon.  ``duration`` and
    ``first_pass_bandwidth`` default to the guest's
    :func:`capture_schedule`, which ``announce(schedule)`` is given once
    the checks that refuse a capture have passed, before the probe starts.

    A probe faster than the guest dirties pages shrinks its rounds until,
    in a round of a few milliseconds, the guest writes fewer pages than the
    1 ms limit lets through: QEMU then stops in ``pre-switchover``.  That
    is not an error: the probe is cancelled (the guest runs on) and the
    next one started, so one capture holds several *cycles*, each a first
    pass and rounds of falling length, which is the spread of interval
    lengths that resolves both slow and fast pages.  The interval a cycle
    converged in is an observation too, of (almost) no pages: without it
    only the short intervals the guest was busy in were kept (see
    :mod:`rtmig_nova.capture.trace`).  A probe slower than
    the guest never converges: its rounds grow until every active page is
    dirty in each, one long cycle."""
    if duration is not None and not duration > 0:
        raise ProbeError(f"duration must be > 0 s, got {duration!r}")
    for what, value in (("bandwidth", bandwidth),
                        ("first-pass bandwidth", first_pass_bandwidth)):
        if value is not None and not value >= page_size:
            raise ProbeError(f"{what} must be at least one page per second, "
                             f"got {value!r} bytes/s")
    mem = monitor.memory_bytes()
    if total_pages is None and mem:
        total_pages = mem // page_size
    schedule = capture_schedule(mem or (total_pages or 0) * page_size,
                                bandwidth, duration, first_pass_bandwidth,
                                page_size)
    duration, first_bw = schedule.duration, schedule.first_pass_bandwidth
    if total_pages is not None and total_pages > MAX_PAGES:
        # Refused before the probe, not after it (its per-page arrays),
        # before anything changes.
        raise ProbeError(f"the guest's {total_pages} pages are more than a "
                         f"per-page capture holds, {MAX_PAGES} "
                         f"({bounds.TRACED_PAGES.why})")
    status = _status(monitor)
    if status in RUNNING:
        raise ProbeError(f"a migration is already running (status "
                         f"{status}); not starting a probe")
    events_before = _check_trace_events(monitor)
    if announce is not None:            # what it will do, once it can
        announce(schedule)
    qemu = _qemu_version(monitor)
    params = monitor.cmd("query-migrate-parameters") or {}
    restore = {k: params[k] for k in ("max-bandwidth", "downtime-limit")
               if k in params}
    caps = {c["capability"]: c["state"]
            for c in monitor.cmd("query-migrate-capabilities") or ()}
    was_running = bool((monitor.cmd("query-status") or {}).get("running"))
    follower = LogFollower(log_path)     # before anything changes
    parsers = []
    undo = _Undo()
    undo.push("closing the log", follower.close)
    result = primary = None
    sink = None
    started = time.monotonic()
    try:
        for name in EVENTS:
            if events_before[name]:
                continue
            try:
                monitor.cmd("trace-event-set-state", name=name, enable=True)
            except QMPCommandError as e:
                raise ProbeError(f"no trace support: cannot enable {name} "
                                 f"({e.desc})") from None
            undo.push(f"disabling trace event {name}", monitor.cmd,
                      "trace-event-set-state", name=name, enable=False)
        if "pause-before-switchover" in caps and \
                not caps["pause-before-switchover"]:
            monitor.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "pause-before-switchover", "state": True}])
            undo.push("restoring capability pause-before-switchover",
                      monitor.cmd, "migrate-set-capabilities", capabilities=[
                          {"capability": "pause-before-switchover",
                           "state": False}])
        if restore:
            undo.push("restoring max-bandwidth and downtime-limit",
                      monitor.cmd, "migrate-set-parameters", **restore)
        sink = _Sink()
        undo.push("closing the sink", sink.close)
        undo.push("resuming the guest", _resume_if_migrated, monitor,
                  was_running)
        undo.push("cancelling the probe migration", _cancel, monitor)
        deadline = started + float(duration)
        seen = 0
        while True:
            parser = TraceParser(ram_block, page_size)
            parsers.append(parser)
            converged = _probe_cycle(
                monitor, follower, parser, sink, deadline, bandwidth,
                first_bw, poll, seen, max_rounds, started, progress)
            seen += len(parser.intervals)
            _cancel(monitor)
            _resume_if_migrated(monitor, was_running)
            _drain(follower, parser)
            if not converged or time.monotonic() >= deadline or \
                    (max_rounds and seen >= max_rounds):
                break
        result = time.monotonic() - started
    except BaseException as e:
        primary = e
        raise
    finally:
        errors, interrupted = undo.run()
        if errors:
            msg = "could not restore the guest: " + "; ".join(errors)
            if isinstance(primary, ProbeError):
                msg = f"{primary}; and {msg}"
            raise ProbeError(msg) from None
        if interrupted and result is not None:
            raise KeyboardInterrupt
    res = _result(parsers, follower, sink, result, total_pages, restore,
                  ram_block, page_size, bandwidth, first_bw,
                  dict(qemu, **(metadata or {})))
    return dataclasses.replace(res, schedule=schedule)


def _probe_cycle(monitor, follower, parser, sink, deadline, bandwidth,
                 first_bw, poll, seen, max_rounds, started, progress):
    """One probe migration until ``deadline`` (monotonic s), ``max_rounds``
    observations in all, or convergence (returns True)."""
    monitor.cmd("migrate-set-parameters", **{
        "max-bandwidth": int(first_bw), "downtime-limit": DOWNTIME_LIMIT_MS})
    cycle_start = time.monotonic()
    monitor.cmd("migrate", uri=sink.uri)
    paced = first_bw == bandwidth
    reported = 0
    while True:
        now = time.monotonic()
        _feed(follower, parser)
        if not paced and (parser.first_pass_pages or _near_end_of_pass(
                monitor, first_bw)):
            # Pace the observed rounds from the end of the first pass on.
            monitor.cmd("migrate-set-parameters",
                        **{"max-bandwidth": int(bandwidth)})
            paced = True
        while reported < len(parser.intervals):
            if progress is not None:
                progress(Round(seen + reported + 1,
                               int(parser.observations_[reported].size),
                               float(parser.intervals[reported]),
                               now - started))
            reported += 1
        if now >= deadline or (max_rounds and
                               seen + reported >= max_rounds):
            return False
        if not parser.syncs and now - cycle_start > FIRST_SYNC_TIMEOUT:
            raise ProbeError(
                f"no {SYNC_EVENT} in {follower.path} after "
                f"{FIRST_SYNC_TIMEOUT:g} s: is QEMU's trace backend "
                f"'log' and its stderr that file?")
        st = monitor.cmd("query-migrate") or {}
        status = st.get("status")
        if status == "pre-switchover":
            # The guest wrote fewer pages between two syncs than the 1 ms
            # limit lets through; QEMU waits (guest stopped) for us.
            # virtlogd copies the trace with a delay: what it still holds
            # of this cycle is read first.
            if not (parser.intervals or parser.first_pass_pages):
                _drain(follower, parser)
            if parser.intervals or parser.first_pass_pages:
                return True
            raise ProbeError(
                "the probe migration converged in its first pass (the "
                "guest dirties too few pages): lower --bandwidth")
        if status in ENDED:
            raise ProbeError(
                f"the probe migration ended early: status {status}"
                + (f" ({st['error-desc']})" if st.get("error-desc") else ""))
        time.sleep(poll)


def _feed(follower, parser):
    data = follower.read()
    if data:
        try:
            parser.feed(data)
        except TraceError as e:
            raise ProbeError(f"{follower.path}: {e}") from None


def _drain(follower, parser, quiet=0.2, timeout=5.0):
    """Read the trace until it has been quiet for ``quiet`` s (virtlogd
    copies QEMU's stderr with a delay), so that the next probe's lines do
    not reach this probe's parser."""
    end = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() - last < quiet and time.monotonic() < end:
        data = follower.read()
        if data:
            last = time.monotonic()
            try:
                parser.feed(data)
            except TraceError as e:
                raise ProbeError(f"{follower.path}: {e}") from None
        else:
            time.sleep(0.02)


def _result(parsers, follower, sink, elapsed, total_pages, restore,
            ram_block, page_size, bandwidth, first_bw, metadata):
    from rtmig_nova.model.profile import DirtyProfile
    obs, tau, seen = [], [], 0
    other_blocks = {}
    for parser in parsers:
        o, t, s = parser.observations()
        obs += o
        tau += t
        seen = max(seen, s)
        for name, n in parser.other_blocks.items():
            other_blocks[name] = other_blocks.get(name, 0) + n
    if not any(p.syncs for p in parsers):
        raise ProbeError(f"no {SYNC_EVENT} traced in {elapsed:.1f} s")
    if seen <= 0:
        raise ProbeError(f"no {PAGE_EVENT} of RAM block {ram_block!r} "
                         f"traced (blocks seen: "
                         f"{', '.join(sorted(other_blocks)) or 'none'})")
    if not obs:
        raise ProbeError(f"no complete round after the first pass in "
                         f"{elapsed:.1f} s: capture for longer or with a "
                         f"higher --bandwidth")
    total = seen if total_pages is None else max(int(total_pages), seen)
    meta = {"source": "qemu-trace", "ram_block": str(ram_block),
            "capture": "probe-migration",
            "probe_bandwidth_bytes_per_s": int(bandwidth),
            "probe_first_pass_bandwidth_bytes_per_s": int(first_bw),
            "probe_seconds": round(elapsed, 3), "rounds": len(obs),
            "probe_cycles": len(parsers),
            # Intervals that ended where a probe converged (no pages: see
            # trace.py), and the pages then pending, never sent.
            "converged_intervals": sum(p.converged_intervals
                                       for p in parsers),
            "converged_unseen_pages": sum(p.unseen_pages for p in parsers),
            # Pages no probe sent were all zero in the first pass and never
            # written since: a migration sends them as 9-byte zero pages.
            "zero_pages_from": "first pass"}
    meta.update(metadata or {})
    zero = pages_never_sent(parsers, total)
    profile = DirtyProfile.from_observations(obs, tau, total, page_size,
                                             zero, meta)
    return CaptureResult(profile, len(obs), list(tau), elapsed,
                         parsers[0].first_pass_pages,
                         sink.received if sink is not None else 0,
                         follower.rotations, restore, other_blocks,
                         len(parsers))


def capture_domain(name, uri=DEFAULT_URI, log_path=None, **kwargs):
    """:func:`capture` of a running libvirt domain."""
    monitor = LibvirtMonitor(name, uri)
    try:
        meta = {"domain": name}
        meta.update(kwargs.pop("metadata", None) or {})
        return capture(monitor, log_path or monitor.default_log_path(),
                       metadata=meta, **kwargs)
    finally:
        monitor.close()


def capture_qmp(qmp_path, trace_file, **kwargs):
    """:func:`capture` of a plain QEMU through its QMP unix socket; its
    ``-trace file=`` is ``trace_file``."""
    monitor = QMPMonitor(qmp_path)
    try:
        return capture(monitor, trace_file, **kwargs)
    finally:
        monitor.close()
