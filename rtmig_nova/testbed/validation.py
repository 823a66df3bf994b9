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

"""The validation experiment: predictions against real live migrations.

One *run* on the two-host testbed (:mod:`rtmig_nova.testbed.hosts`):

1. boot a guest running a workload on host A, capture its dirty profile
   with probe migrations (:func:`rtmig_nova.capture.probe.capture_domain`),
   destroy it;
2. predict the migration at the run's bandwidth and downtime limit with the
   ``precopy`` model and the two baselines (``geometric``,
   ``qemu-estimate``);
3. boot a fresh guest with the same workload and seed, live-migrate it
   A -> B for real with those settings, record what libvirt/QEMU measured
   and the CPU time of QEMU's migration thread; destroy it.

Why two guests: see :func:`capture_profile`.

:func:`run_experiment` does that for every workload x bandwidth x
repetition; :mod:`rtmig_nova.testbed.report` writes the CSV, plots and the
markdown report.  Units: bytes, seconds, bytes/s.
"""

import dataclasses
import math
import os
import statistics
import threading
import uuid

from rtmig_nova import bounds
from rtmig_nova import planning
from rtmig_nova.enforce import libvirt_controls
from rtmig_nova.enforce import netshape
from rtmig_nova.enforce import privileged
from rtmig_nova.enforce import reservation
from rtmig_nova.model import precopy
from rtmig_nova.testbed import guest as guest_mod
from rtmig_nova.testbed import hosts
from rtmig_nova.testbed import reserved
from rtmig_nova.testbed.cases import (  # noqa: F401  (also offered here)
    DEFAULT_CALIBRATION_RUNS, DEFAULT_CAPTURE_S, DEFAULT_DOWNTIME_LIMIT,
    DEFAULT_PROBE_BANDWIDTH, DEFAULT_REPETITIONS, DEFAULT_WORKLOADS, IDLE,
    MIB, PROBE_FIRST_PASS_BANDWIDTH, Workload)

BOOT_TIMEOUT = guest_mod.BOOT_TIMEOUT   # s
MODELS = ("precopy", "geometric", "qemu-estimate")
CLOCK_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
PAGE_SIZE = 4096        # bytes: the x86 guests' pages


@dataclasses.dataclass
class RunResult:
    """One run: the settings, the capture, the predictions, the measurement.

    ``predicted[model]`` holds, per model, ``total_time_s``,
    ``downtime_s``, ``bytes_sent`` (each with ``mean``, ``p5``, ``p50``,
    ``p95``) and ``converges`` (probability); ``measured`` the
    :meth:`hosts.Testbed.migrate` statistics (SI) plus
    ``migration_thread_cpu_s`` and ``cpu_per_page_s``, or ``None`` when the
    migration timed out (``timed_out``)."""
    workload: str
    repetition: int
    bandwidth: float                 # bytes/s, as applied (whole MiB/s)
    downtime_limit: float            # s
    profile_summary: dict
    predicted: dict
    measured: dict
    timed_out: bool = False
    error: str = None
    timeout_s: float = None          # s after which it would be aborted
    link: "ShapedLink" = None        # None: the veth unshaped

    def flat(self):
        """One flat dict (a CSV row)."""
        row = {"workload": self.workload, "repetition": self.repetition,
               "bandwidth_bytes_per_s": self.bandwidth,
               "downtime_limit_s": self.downtime_limit,
               "timed_out": self.timed_out, "timeout_s": self.timeout_s,
               "error": self.error or "",
               "shaped_link_rate_bytes_per_s":
                   None if self.link is None else self.link.link_rate,
               "shaped_send_cap_bytes":
                   None if self.link is None else self.link.send_cap}
        row.update({f"profile_{k}": v
                    for k, v in self.profile_summary.items()})
        m = self.measured or {}
        for key in MEASURED_KEYS:
            row[f"measured_{key}"] = m.get(key)
        for model in MODELS:
            p = self.predicted.get(model) or {}
            tag = model.replace("-", "_")
            row[f"{tag}_converges"] = p.get("converges")
            row[f"{tag}_p_within_timeout"] = p.get("p_within_timeout")
            for metric in ("total_time_s", "downtime_s", "bytes_sent"):
                for stat in ("mean", "p5", "p50", "p95"):
                    row[f"{tag}_{metric}_{stat}"] = \
                        (p.get(metric) or {}).get(stat)
        return row


MEASURED_KEYS = ("total_time_s", "downtime_s", "setup_time_s",
                 "transferred_bytes", "memory_bytes", "normal_pages",
                 "constant_pages", "iterations", "wall_time_s",
                 "migration_thread_cpu_s", "cpu_per_page_s",
                 "guest_lost", "integrity_error")


def _summary(dist):
    def val(x):
        x = float(x)
        return x if math.isfinite(x) else None
    return {"mean": val(dist.mean), "p5": val(dist.quantile(0.05)),
            "p50": val(dist.quantile(0.5)), "p95": val(dist.quantile(0.95))}


MIN_TIMEOUT = 60.0                     # s


def predict_all(profile, bandwidth, downtime_limit, models=MODELS,
                timeout=None, **settings):
    """({model: summary}, timeout): each model's prediction (see
    :class:`RunResult`) and the time after which the real migration is
    aborted: ``timeout`` or 3 x the precopy model's p95 total time, at
    least :data:`MIN_TIMEOUT` s.  Each summary also has
    ``p_within_timeout``, the predicted probability that the migration
    finishes before the abort.  ``settings``: further MigrationSettings
    fields (the host calibration)."""
    from rtmig_nova.model import predict
    preds = {model: predict(profile, bandwidth=bandwidth,
                            downtime_limit=downtime_limit, model=model,
                            **settings)
             for model in models}
    if timeout is None:
        p95 = float(preds[models[0]].total_time.quantile(0.95))
        timeout = max(MIN_TIMEOUT, 3 * p95) if math.isfinite(p95) \
            else MIN_TIMEOUT
    out = {model: {"converges": float(pred.converges),
                   "p_within_timeout": float(pred.total_time.cdf(timeout)),
                   "total_time_s": _summary(pred.total_time),
                   "downtime_s": _summary(pred.downtime),
                   "bytes_sent": _summary(pred.bytes_sent)}
           for model, pred in preds.items()}
    return out, timeout


# ------------------------------------------------- migration thread CPU

def _qemu_pid(domain_name):
    """The pid of the QEMU running ``domain_name`` (libvirt passes
    ``-name guest=NAME,debug-threads=on``), or None."""
    needle = ("guest=%s," % domain_name).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                if needle in f.read():
                    return int(entry)
        except OSError:
            pass
    return None


def _thread_cpu_s(pid, is_thread):
    """CPU seconds (user + system) of ``pid``'s thread whose name
    ``is_thread(name)`` accepts, or None if there is none (QEMU names
    threads with debug-threads=on)."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return None
    for tid in tids:
        base = "/proc/%d/task/%s/" % (pid, tid)
        try:
            with open(base + "comm") as f:
                if not is_thread(f.read().rstrip("\n")):
                    continue
            with open(base + "stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the ")" of comm: state is field 3; utime 14, stime 15.
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * CLOCK_TICK_S
    return None


class ThreadCpuSampler:
    """Samples the CPU time of QEMU's migration thread of a domain (either
    of its names, :data:`~rtmig_nova.enforce.libvirt_controls.
    MIGRATION_THREAD_NAMES`) every ``period`` s in the background;
    :attr:`cpu_s` is the last value seen before the thread ended (at most
    ``period`` short)."""

    def __init__(self, domain_name, period=0.02):
        self.domain_name = domain_name
        self.period = period
        self.cpu_s = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="rtmig-cpu-sampler")

    def _run(self):
        pid = None
        while not self._stop.is_set():
            if pid is None:
                pid = _qemu_pid(self.domain_name)
            if pid is not None:
                value = _thread_cpu_s(
                    pid, libvirt_controls.is_migration_thread)
                if value is not None:
                    self.cpu_s = value
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


# ------------------------------------------------------------- one run

destroy_domain = hosts.destroy_domain


def _active(uri, name):
    libvirt = hosts._quiet_libvirt()
    conn = libvirt.open(uri)
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def _boot(bed, boot_files, workload, boot_timeout):
    """Start a guest running ``workload`` on host A and wait (at most
    ``boot_timeout`` s) until it runs; its console goes to
    ``WORKDIR/NAME.console``.  Returns its name."""
    name = hosts.DOMAIN_PREFIX + uuid.uuid4().hex[:8]
    console = os.path.join(bed.workdir, name + ".console")
    bed.start_guest(*boot_files, workload.cmdline(), name=name,
                    memory_mib=workload.memory_mib, console_log=console)
    try:
        guest_mod.wait_until_running(
            console, workload.program, boot_timeout,
            alive=lambda: _active(hosts.URI_A, name))
    except guest_mod.GuestBootError as e:
        destroy_domain(hosts.URI_A, name)
        raise hosts.TestbedError(f"guest {name}: {e}") from None
    return name


def capture_profile(bed, boot_files, workload, capture_s=DEFAULT_CAPTURE_S,
                    probe_bandwidth=DEFAULT_PROBE_BANDWIDTH,
                    boot_timeout=BOOT_TIMEOUT):
    """Boot a guest running ``workload`` on host A, capture its profile
    (probe migrations of ``capture_s`` s in all), destroy it; returns the
    :class:`~rtmig_nova.capture.probe.CaptureResult`.

    The guest that was probed is not the one migrated: under TCG, QEMU 7.2
    corrupted the destination of every long migration of a guest whose
    earlier migration was cancelled (a kernel oops in the timer code right
    after the switch-over, also after a plain ``abortJob``; see
    docs/testbed.md), so every migration is of a fresh guest running the
    same workload with the same seed."""
    from rtmig_nova.capture import probe
    name = _boot(bed, boot_files, workload, boot_timeout)
    try:
        return probe.capture_domain(
            name, hosts.URI_A, duration=capture_s, bandwidth=probe_bandwidth,
            first_pass_bandwidth=PROBE_FIRST_PASS_BANDWIDTH)
    finally:
        destroy_domain(hosts.URI_A, name)


@dataclasses.dataclass(frozen=True)
class ShapedLink:
    """The migration's stream over a shaped link, as the Nova driver
    shapes it with ``[rtmig] migration_interface``: on A's end of the
    veth an HTB hierarchy of a ``link_rate`` bytes/s link whose migration
    class is hard-capped at what QEMU sends under its bandwidth
    (:func:`reservation.migration_shaping`), the stream paced at the
    class's rate and its unsent bytes capped at ``send_cap`` (once the
    migration runs, :func:`reservation.running_migration_steps`).  The
    models are told the class's payload rate as the link and the
    backlog the cap leaves (:func:`planning.send_backlog`)."""
    link_rate: float = 125e6        # bytes/s: 1 Gbit/s
    send_cap: int = 65536           # bytes

    def shaping(self, bandwidth, qemu_version):
        """The :class:`~netshape.ShapingPlan` for a migration at
        ``bandwidth`` bytes/s by QEMU ``qemu_version``."""
        return reservation.migration_shaping(
            hosts.VETH_A, self.link_rate, bandwidth,
            netshape.MIGRATION_PORTS, peer=hosts.IP_B,
            qemu_version=qemu_version)

    def settings(self, bandwidth, qemu_version):
        """MigrationSettings fields for a migration over it."""
        return {"link_rate": netshape.payload_rate(
                    self.shaping(bandwidth, qemu_version).migration.rate),
                "send_backlog": planning.send_backlog(self.send_cap)}


class _ShapeWhenRunning:
    """``on_poll`` of a migration over a :class:`ShapedLink`: the cap and
    the pacing on QEMU's stream once it is connected."""

    def __init__(self, held, link, plan):
        self.held, self.link, self.plan = held, link, plan
        self.done = False

    def __call__(self, dom, elapsed_s):
        if self.done:
            return
        steps = reservation.running_migration_steps(
            dom, None, self.link.send_cap, hosts.IP_B,
            pacing=reservation.migration_pacing(self.plan))
        if steps:
            self.held.apply("migration stream", steps)
            self.done = True


def migrate_measured(bed, boot_files, workload, bandwidth, downtime_limit,
                     timeout, boot_timeout=BOOT_TIMEOUT, link=None,
                     qemu_version=None):
    """Boot a fresh guest running ``workload`` on host A and live-migrate it
    to B with ``bandwidth`` (bytes/s, a whole MiB/s) and ``downtime_limit``
    (s); returns (statistics or None if it timed out after ``timeout`` s).
    The statistics are those of :meth:`hosts.Testbed.migrate` without the
    raw ``libvirt`` dict, plus ``migration_thread_cpu_s`` (CPU seconds of
    QEMU's migration thread on A), ``cpu_per_page_s`` (that over
    the pages sent, normal and zero), ``guest_lost`` (what the workload's
    integrity check on B found lost: writes, or pages for video; None if
    it could not tell) and ``integrity_error`` (why the check failed, or
    None): a migration that lost writes is kept, marked, not dropped.
    ``link``: a :class:`ShapedLink` to migrate over (QEMU
    ``qemu_version``'s send rate sizes its class), reserved for the
    migration and released after it (None: the veth as it is).  The
    guest is destroyed."""
    name = _boot(bed, boot_files, workload, boot_timeout)
    held = reserved.Reservations(os.path.join(bed.workdir, "reservations"),
                                 "validation %s" % workload.label)
    try:
        with ThreadCpuSampler(name) as cpu, privileged.in_process_as_root():
            on_poll = None
            try:
                if link is not None:
                    plan = link.shaping(bandwidth, qemu_version)
                    held.apply("link", [reservation.ShapingStep(plan)])
                    on_poll = _ShapeWhenRunning(held, link, plan)
                measured = bed.migrate(name, bandwidth_bytes_per_s=bandwidth,
                                       downtime_limit_s=downtime_limit,
                                       timeout=timeout, on_poll=on_poll)
                integrity_error = None
            except hosts.MigrationTimeout:
                return None
            except guest_mod.GuestIntegrityError as e:
                measured, integrity_error = e.stats, str(e)
                measured["guest_check"] = e.check
            except reservation.ReservationError as e:
                raise hosts.TestbedError("reserving the shaped link: %s"
                                         % e) from e
            finally:
                held.release()
        measured.pop("libvirt", None)
        check = measured.pop("guest_check", None)
        measured["guest_lost"] = None if check is None else check.lost
        measured["integrity_error"] = integrity_error
        measured["migration_thread_cpu_s"] = cpu.cpu_s
        pages = (measured.get("normal_pages") or 0) + \
            (measured.get("constant_pages") or 0)
        measured["cpu_per_page_s"] = (cpu.cpu_s / pages
                                      if cpu.cpu_s and pages else None)
        return measured
    finally:
        destroy_domain(hosts.URI_A, name)
        destroy_domain(hosts.URI_B, name)


def calibrate(bed, boot_files, repetitions=3, boot_timeout=BOOT_TIMEOUT,
              log=None, warmup=True, link=None):
    """The host's fixed costs, from migrations of an idle guest (the image
    with no workload: it dirties almost nothing, so its migration is the
    first pass and the fixed parts):

    ``setup_time_s``      libvirt's job time before QEMU's first page:
                          time_elapsed - downtime - the model's pre-copy
                          time for that idle guest, at a bandwidth that
                          bounds the sending (32 MiB/s): measured the
                          way the model adds it (the model's window bursts
                          end its pre-copy up to a window early, which
                          time_elapsed - bytes / send rate counted again:
                          14 ms less on the kept calibration);
    ``switchover_time_s`` the downtime of that migration (its last round
                          is a few pages; not the unbounded one's, whose
                          last round is larger: 74-80 ms against 12-14 ms
                          here);
    ``link_rate_bytes_per_s`` bytes over the sending time of a migration
                          without a rate limit (libvirt's 8 GiB/s cap),
                          its stop-and-copy's bytes and time included:
                          what the stop-and-copy runs at;
    ``setup_time_sd_s``   the spread of the next migration's setup time
                          from the repetitions' (:func:`predictive_sd`:
                          three samples say little about a spread;
                          ``setup_time_sample_sd_s`` is theirs);
    ``send_efficiency``   the bytes QEMU sends per second over the model's
                          send rate (precopy.send_rate), from a second
                          idle migration at 8 MiB/s: the difference of the
                          two sending times over the difference of their
                          bytes / send rate (the setup cancels);
    ``send_rate_sd``      the relative standard deviation of that
                          efficiency between repetitions (it includes the
                          setup's jitter over the difference: an upper
                          bound; :func:`predictive_sd` of it, the sample's
                          is ``send_rate_sample_sd``), the model's
                          ``send_rate_sd``;
    ``qemu_version``      host A's QEMU release ("MAJOR.MINOR"), whose
                          send rate the setup time is computed with;
    ``shaped_link``       None, or the :class:`ShapedLink` ``link``'s
                          ``link_rate`` and ``send_cap`` that the two
                          rate-limited migrations went over (their class
                          and pacing, as the runs over that link have
                          them: the setup and the send efficiency are
                          then the shaped stream's; the unlimited one
                          stays on the veth as it is, whose rate a class
                          cannot exceed).

    With ``warmup``, one idle migration first is measured and discarded:
    the first migration on freshly started hosts is slower (host B's first
    QEMU, cold caches: a 31 ms downtime where the next ones read 9-13 ms).
    Medians over ``repetitions``; ``runs`` holds every measurement, and
    ``warmup`` the discarded one."""
    log = log or (lambda msg: None)
    qemu = hosts.qemu_version()
    runs = []
    bounded = BOUNDED_IDLE_BANDWIDTH
    discarded = None

    def idle(bandwidth, over=link):
        return migrate_measured(bed, boot_files, IDLE, bandwidth, 0.05, 60,
                                boot_timeout, link=over, qemu_version=qemu)
    if warmup:
        log("calibration warm-up")
        discarded = idle(bounded)
    for i in range(repetitions):
        log("calibration %d/%d" % (i + 1, repetitions))
        a = idle(bounded)
        slow = idle(SLOW_IDLE_BANDWIDTH)
        b = idle(8192 * MIB, over=None)
        if a is None or b is None or slow is None:
            raise hosts.TestbedError("an idle guest's migration timed out")
        runs.append({"bounded": a, "slow": slow, "unbounded": b})
    out = derive_calibration(runs, qemu, link)
    out["warmup"] = discarded
    return out


def derive_calibration(runs, qemu, link=None):
    """The calibration (see :func:`calibrate`) from its idle migrations:
    ``runs`` of ``{"bounded":, "slow":, "unbounded":}`` measured
    statistics (bandwidths :data:`BOUNDED_IDLE_BANDWIDTH`,
    :data:`SLOW_IDLE_BANDWIDTH` and unbounded), on QEMU ``qemu``, the
    two bounded ones over ``link`` (a :class:`ShapedLink`, or None).  Each
    run gains its derived values; the result holds the medians and
    ``runs``.  Kept apart from the measuring so that a later build derives
    the same measurements again (:func:`rescore`).

    Over a shaped link the models are given its class's rate and the
    capped socket's backlog (:meth:`ShapedLink.settings`), so the
    switch-over is the bounded migration's downtime less the backlog at
    the class's rate (the model adds it back), and its pre-copy is
    modelled at the class's rate."""
    shaped = None if link is None else \
        link.settings(BOUNDED_IDLE_BANDWIDTH, qemu)
    backlog_s = 0.0 if shaped is None else \
        shaped["send_backlog"] / shaped["link_rate"]
    derived = []
    for r in runs:
        a, slow, b = r["bounded"], r["slow"], r["unbounded"]
        setup, link_rate = _idle_setup_and_link(
            a, b, qemu, None if shaped is None else shaped["link_rate"])
        derived.append(dict(r, setup_time_s=setup,
                            switchover_time_s=a["downtime_s"] - backlog_s,
                            link_rate_bytes_per_s=link_rate,
                            send_efficiency=_send_efficiency(
                                (slow, SLOW_IDLE_BANDWIDTH),
                                (a, BOUNDED_IDLE_BANDWIDTH), qemu)))
    runs = derived
    out = {"qemu_version": qemu}
    for key in ("setup_time_s", "switchover_time_s",
                "link_rate_bytes_per_s", "send_efficiency"):
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = statistics.median(values) if values else None
    setups = [r["setup_time_s"] for r in runs]
    out["setup_time_sample_sd_s"] = statistics.stdev(setups) \
        if len(setups) > 1 else 0.0
    out["setup_time_sd_s"] = predictive_sd(out["setup_time_sample_sd_s"],
                                           len(setups))
    effs = [r["send_efficiency"] for r in runs
            if r["send_efficiency"] is not None]
    out["send_rate_sample_sd"] = statistics.stdev(effs) / \
        statistics.median(effs) if len(effs) > 1 else 0.0
    out["send_rate_sd"] = predictive_sd(out["send_rate_sample_sd"],
                                        len(effs))
    out["shaped_link"] = None if link is None else {
        "link_rate_bytes_per_s": link.link_rate,
        "send_cap_bytes": link.send_cap}
    out["runs"] = runs
    return out


# bytes/s: the calibration's rate limits (the bounded one fixes the setup
# time, the slow one with it the send efficiency)
BOUNDED_IDLE_BANDWIDTH = 32 * MIB
SLOW_IDLE_BANDWIDTH = 8 * MIB
# Rounds of the setup-time / link-rate fixed point (_idle_setup_and_link):
# the link moves the bounded migration's time by its last window's burst
# only, so the second round changes the setup by well under a millisecond.
IDLE_FIXED_POINT_ROUNDS = 3


# The quantile at which a calibrated spread is matched (the validation
# scores the predicted 5-95% interval).
PREDICTIVE_QUANTILE = 0.95


def predictive_sd(sample_sd, n):
    """The spread of the next migration's value, from ``n`` calibration
    samples of standard deviation ``sample_sd``: Student's t predictive
    (the mean and the spread are both estimated: a value sample_sd x
    sqrt(1 + 1/n) x t(n - 1) from the samples' mean), as the normal
    spread with the same :data:`PREDICTIVE_QUANTILE` quantile.  Three
    samples read 2.05 x their standard deviation, ten 1.16 x, many 1 x.
    0 with fewer than two samples (no spread measured)."""
    if n < 2 or not sample_sd > 0:
        return 0.0
    from scipy import stats
    q = PREDICTIVE_QUANTILE
    return float(sample_sd * math.sqrt(1.0 + 1.0 / n) *
                 stats.t.ppf(q, n - 1) / stats.norm.ppf(q))


def _idle_precopy_time(measured, bandwidth, qemu, link_rate):
    """Seconds the model takes to send an idle guest's pre-copy (its
    migration less the setup and the downtime), ``measured`` its
    statistics at ``bandwidth`` bytes/s on QEMU ``qemu`` over a link of
    ``link_rate`` bytes/s (None: shaped to the send rate): the pages QEMU
    found zero cost a header and a byte, every other page its full size,
    sent once; the bytes it sent beyond those (pages written while it
    ran) are added at the send rate."""
    from rtmig_nova.model import predict
    from rtmig_nova.model.profile import DirtyProfile
    page = int(measured.get("page_size_bytes") or PAGE_SIZE)
    pages = int(measured["memory_bytes"]) // page
    zero = min(int(measured["constant_pages"]), pages)
    idle = DirtyProfile.from_histogram([], [], idle_pages=pages,
                                       zero_pages=zero, page_size=page)
    pred = predict(idle, bandwidth=bandwidth,
                   downtime_limit=measured.get("downtime_limit_s") or 0.05,
                   qemu_version=qemu, link_rate=None if link_rate is None
                   else max(link_rate, bandwidth))
    precopy_s = float(pred.total_time.quantile(0.5)) - \
        float(pred.downtime.quantile(0.5))
    extra_bytes = measured["transferred_bytes"] - \
        float(pred.bytes_sent.quantile(0.5))
    return precopy_s + extra_bytes / precopy.send_rate(
        bandwidth, page, qemu_version=qemu)


def _idle_setup_and_link(bounded, unbounded, qemu, shaped_rate=None):
    """(setup time s, link rate bytes/s or None) from an idle guest's
    migrations at :data:`BOUNDED_IDLE_BANDWIDTH` and without a rate
    limit: the setup is what the bounded one took beyond the model's
    pre-copy and its downtime, so that the model given this setup
    predicts it (the model's own window bursts and stop-and-copy are in
    its pre-copy time, not counted twice); the link rate is the unbounded
    one's bytes over its sending time, its stop-and-copy's included.  The
    two depend on each other through the bounded migration's last burst:
    a fixed point.  ``shaped_rate``: bytes/s of the class the bounded one
    went through (None: the veth as it is), its pre-copy's link then."""
    setup = bounded["total_time_s"] - bounded["downtime_s"] - \
        bounded["transferred_bytes"] / precopy.send_rate(
            BOUNDED_IDLE_BANDWIDTH, PAGE_SIZE, qemu_version=qemu)
    link = None
    for _ in range(IDLE_FIXED_POINT_ROUNDS):
        # The stop-and-copy's bytes go at the link's rate too: only the
        # switch-over's fixed part (the bounded one's downtime: a few
        # pages) is not sending.
        sending = unbounded["total_time_s"] - max(setup, 0.0) - \
            bounded["downtime_s"]
        link = unbounded["transferred_bytes"] / sending if sending > 0 \
            else None
        setup = bounded["total_time_s"] - bounded["downtime_s"] - \
            _idle_precopy_time(bounded, BOUNDED_IDLE_BANDWIDTH, qemu,
                               link if shaped_rate is None else shaped_rate)
    return setup, link


def recalibrated(calibration):
    """``calibration`` (a calibration.json) with its derived values made
    again by this build from the idle migrations it kept
    (:func:`derive_calibration`); as it is when it kept none that can be
    read (an edited or hand-written calibration)."""
    if not isinstance(calibration, dict):
        return calibration
    runs, qemu = calibration.get("runs"), calibration.get("qemu_version")
    keys = ("total_time_s", "downtime_s", "transferred_bytes",
            "memory_bytes", "constant_pages")
    legs = ("bounded", "slow", "unbounded")

    def readable(r):
        return isinstance(r, dict) and all(
            isinstance(r.get(leg), dict) and all(
                isinstance(r[leg].get(k), (int, float)) and
                not isinstance(r[leg].get(k), bool) and
                math.isfinite(r[leg][k]) for k in keys) for leg in legs)
    if not (isinstance(runs, list) and runs and isinstance(qemu, str) and
            all(readable(r) for r in runs)):
        return calibration
    out = dict(calibration)
    out.update(derive_calibration(runs, qemu,
                                  _shaped_link_of(calibration)))
    return out


def _shaped_link_of(calibration):
    """The :class:`ShapedLink` a calibration.json's ``shaped_link`` names,
    or None (none, or not readable)."""
    doc = calibration.get("shaped_link")
    if not isinstance(doc, dict):
        return None
    rate, cap = doc.get("link_rate_bytes_per_s"), doc.get("send_cap_bytes")
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool)
            and math.isfinite(rate) and rate > 0 and isinstance(cap, int)
            and not isinstance(cap, bool) and cap >= 0):
        return None
    return ShapedLink(float(rate), cap)


def _send_efficiency(slow, fast, qemu):
    """Bytes sent per second over the model's send rate, from two idle
    migrations, (measured statistics, bandwidth bytes/s) each: the
    difference of their sending times (total less downtime; the setup
    cancels) against the difference the model's send rate gives.  None
    when the two are too alike to tell (under 0.5 s apart)."""
    def model_s(m, bw):
        return m["transferred_bytes"] / precopy.send_rate(
            bw, PAGE_SIZE, qemu_version=qemu)
    (slow, slow_bw), (fast, fast_bw) = slow, fast
    measured = (slow["total_time_s"] - slow["downtime_s"]) - \
        (fast["total_time_s"] - fast["downtime_s"])
    predicted = model_s(slow, slow_bw) - model_s(fast, fast_bw)
    if predicted < 0.5 or measured <= 0:
        return None
    return predicted / measured


def _calibrated(calibration, key, required):
    """calibration[key] as a float: a finite number (a negative setup or
    switch-over measured as 0).  A required one that is missing or not
    finite: ValueError; an optional one: None (the default applies)."""
    value = calibration.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
    if not ok:
        if required:
            raise ValueError(f"calibration {key}: {value!r} is not a finite "
                             f"number")
        return None
    return float(value)


def model_settings(calibration):
    """MigrationSettings fields from a :func:`calibrate` result (or its
    calibration.json, which a user may have edited: every value checked)."""
    if not calibration:
        return {}
    out = {"setup_time": max(0.0, _calibrated(calibration, "setup_time_s",
                                              True)),
           "setup_time_sd": max(0.0, _calibrated(
               calibration, "setup_time_sd_s", False) or 0.0),
           "switchover_time": max(0.0, _calibrated(
               calibration, "switchover_time_s", True))}
    if calibration.get("qemu_version"):
        out["qemu_version"] = calibration["qemu_version"]
    sd = _calibrated(calibration, "send_rate_sd", False)
    if sd and sd > 0:
        out["send_rate_sd"] = min(sd, bounds.LOG_SPREAD.high)
    link = _calibrated(calibration, "link_rate_bytes_per_s", False)
    if link and link > 0:
        out["link_rate"] = link
    return out


def run_one(bed, boot_files, workload, bandwidth, downtime_limit,
            repetition=0, capture_s=DEFAULT_CAPTURE_S,
            probe_bandwidth=DEFAULT_PROBE_BANDWIDTH, boot_timeout=BOOT_TIMEOUT,
            timeout=None, log=None, settings=None, profile_dir=None,
            link=None):
    """One run (see the module doc) on the running testbed ``bed`` with the
    guest image ``boot_files`` = (kernel, initrd).  ``bandwidth``: bytes/s
    (libvirt applies whole MiB/s: the prediction uses the applied value);
    ``downtime_limit``: s (whole ms).  ``timeout``: s before the real
    migration is aborted (default: 3 x the precopy model's p95 total time,
    at least :data:`MIN_TIMEOUT`).  ``settings``: MigrationSettings
    fields for every
    model (see :func:`model_settings`).  ``profile_dir``: where to keep the
    captured profile (:func:`profile_path`), so that a later model can be
    scored on the same captures.  ``link``: a :class:`ShapedLink` the
    real migration goes over (the capture's probes go over the veth
    unshaped, as the isolation experiment's do).  Returns a
    :class:`RunResult`; no guest is left."""
    log = log or (lambda msg: None)
    applied = max(1, int(round(bandwidth / MIB))) * MIB
    downtime_limit = max(1, int(round(downtime_limit * 1000))) / 1000.0
    log("%s: capturing for %gs" % (workload.label, capture_s))
    cap = capture_profile(bed, boot_files, workload, capture_s,
                          probe_bandwidth, boot_timeout)
    profile = cap.profile
    if profile_dir is not None:
        os.makedirs(profile_dir, exist_ok=True)
        profile.save(profile_path(profile_dir, workload.label, applied,
                                  repetition))
    summary = {"total_pages": profile.total_pages,
               "active_pages": profile.active_pages,
               "zero_pages": profile.zero_pages,
               "write_rate_per_s": profile.write_rate,
               "capture_rounds": cap.rounds, "capture_cycles": cap.cycles,
               "qemu_version": profile.metadata.get("qemu_version")}
    settings = run_settings(settings, applied, link,
                            profile.metadata.get("qemu_version"))
    predicted, timeout = predict_all(profile, applied, downtime_limit,
                                     timeout=timeout, **settings)
    log("%s: migrating at %.0f MiB/s, downtime limit %g ms%s"
        % (workload.label, applied / MIB, downtime_limit * 1000,
           "" if link is None else ", over the shaped link"))
    measured = migrate_measured(bed, boot_files, workload, applied,
                                downtime_limit, timeout, boot_timeout,
                                link, settings.get("qemu_version"))
    return RunResult(workload.label, repetition, applied, downtime_limit,
                     summary, predicted, measured, measured is None,
                     timeout_s=timeout, link=link)


def run_settings(settings, bandwidth, link=None, profile_qemu=None):
    """The models' MigrationSettings fields for one run at ``bandwidth``
    bytes/s: the host's (``settings``, :func:`model_settings`), the link
    at least the bandwidth, or a :class:`ShapedLink`'s (by the host's
    QEMU, else the profile's ``profile_qemu``)."""
    out = dict(settings or {})
    if link is not None:
        qemu = out.get("qemu_version") or profile_qemu or \
            precopy.DEFAULT_QEMU_VERSION
        out.update(link.settings(bandwidth, qemu), qemu_version=qemu)
    elif out.get("link_rate") is not None:
        out["link_rate"] = max(out["link_rate"], bandwidth)
    return out


def rescore(rows, profile_dir, calibration, models=MODELS):
    """The CSV rows (:func:`report.read_csv
    <rtmig_nova.testbed.report.read_csv>`) of an experiment with every
    model's predictions made again, by this build, from each run's kept
    profile (:func:`profile_path`) and the experiment's calibration (pass
    it through :func:`recalibrated` for this build's derivation); the
    measurements and the abort time each run had are kept.  A run without
    its profile (it failed before the capture) is kept as it was.
    Returns the new rows."""
    from rtmig_nova.model.profile import DirtyProfile
    settings = model_settings(calibration)
    out = []
    for row in rows:
        path = profile_path(profile_dir, row["workload"],
                            row["bandwidth_bytes_per_s"],
                            int(row["repetition"]))
        if row.get("error") and not os.path.exists(path):
            out.append(dict(row))
            continue
        profile = DirtyProfile.load(path)
        bw = row["bandwidth_bytes_per_s"]
        link = None
        if row.get("shaped_link_rate_bytes_per_s"):
            link = ShapedLink(float(row["shaped_link_rate_bytes_per_s"]),
                              int(row["shaped_send_cap_bytes"]))
        st = run_settings(settings, bw, link,
                          profile.metadata.get("qemu_version"))
        predicted, _ = predict_all(profile, bw, row["downtime_limit_s"],
                                   models, timeout=row.get("timeout_s"),
                                   **st)
        res = RunResult(row["workload"], int(row["repetition"]), bw,
                        row["downtime_limit_s"], {}, predicted, None)
        tags = tuple(m.replace("-", "_") + "_" for m in models)
        new = dict(row)
        new.update({k: v for k, v in res.flat().items()
                    if k.startswith(tags)})
        out.append(new)
    return out


def profile_path(profile_dir, label, bandwidth, repetition):
    """Where :func:`run_one` keeps the profile captured for a run:
    ``<label>-<MiB/s>MiBps-r<repetition>.json``."""
    return os.path.join(profile_dir, "%s-%dMiBps-r%d.json"
                        % (label, round(bandwidth / MIB), repetition))


# ------------------------------------------------------- the experiment

def plan_runs(workloads=DEFAULT_WORKLOADS, bandwidths=None,
              repetitions=DEFAULT_REPETITIONS):
    """The (workload, bandwidth, repetition) triples of an experiment,
    repetitions outermost so that an interrupted experiment still covers
    every case.  ``bandwidths`` (bytes/s) for every workload, or None for
    each workload's own."""
    if not workloads or repetitions < 1 or (bandwidths is not None and
                                            not bandwidths):
        raise ValueError("need at least one workload, one bandwidth and one "
                         "repetition")
    for w in workloads:
        if bandwidths is None and not w.bandwidths:
            raise ValueError(f"workload {w.label} has no bandwidths")
    return [(w, b, r) for r in range(repetitions) for w in workloads
            for b in (w.bandwidths if bandwidths is None else bandwidths)]


def run_experiment(workdir, boot_files, runs,
                   downtime_limit=DEFAULT_DOWNTIME_LIMIT,
                   capture_s=DEFAULT_CAPTURE_S,
                   probe_bandwidth=DEFAULT_PROBE_BANDWIDTH,
                   boot_timeout=BOOT_TIMEOUT, progress=None, log=None,
                   calibration_runs=DEFAULT_CALIBRATION_RUNS,
                   profile_dir=None, link=None, calibration=None):
    """Bring the testbed up in ``workdir``, calibrate the host's fixed
    costs (:func:`calibrate`, ``calibration_runs`` times; 0: none), do
    every run of ``runs`` (from :func:`plan_runs`) with them, tear it down
    (also on error or Ctrl-C).  A run that fails is recorded with its
    ``error`` and the experiment goes on.  ``progress(done, total,
    result)`` is called after each run; ``profile_dir`` and ``link``:
    see :func:`run_one` (a calibration made here goes over ``link`` too).
    ``calibration``: one made before (a calibration.json dict), used
    instead of calibrating again.  Returns
    (the :class:`RunResult` list, the calibration)."""
    from rtmig_nova.capture import probe
    results = []
    bed = hosts.up(workdir)
    try:
        if calibration is None and calibration_runs:
            calibration = calibrate(bed, boot_files, calibration_runs,
                                    boot_timeout, log, link=link)
        settings = model_settings(calibration)
        for i, (workload, bandwidth, rep) in enumerate(runs):
            try:
                res = run_one(bed, boot_files, workload, bandwidth,
                              downtime_limit, rep, capture_s,
                              probe_bandwidth, boot_timeout, log=log,
                              settings=settings, profile_dir=profile_dir,
                              link=link)
            except (probe.ProbeError, hosts.TestbedError) as e:
                res = RunResult(workload.label, rep, bandwidth,
                                downtime_limit, {}, {}, None,
                                error=" ".join(str(e).split()), link=link)
            results.append(res)
            if progress is not None:
                progress(i + 1, len(runs), res)
    finally:
        bed.down()
    return results, calibration
