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

"""One function per subcommand, ``cmd_*(args, defaults)`` -> exit status:
the option values are checked and converted, the model is called, and the
result is printed as a table or as JSON."""

import dataclasses
import os
import sys
import time

from rtmig_nova import bounds
from rtmig_nova import units
from rtmig_nova.cli.errors import EXIT_INFEASIBLE, EXIT_OK, CliError
from rtmig_nova.cli.output import emit, print_json
from rtmig_nova.cli.profiles import (
    file_kind, load_profile, read_npy, replacing, resolve_profile)
from rtmig_nova.cli.reports import (
    QUANTILES, header_lines, ordering_lines, plan_lines, prediction_lines,
    profile_info, profile_show_lines, profile_summary, settings_line)

# Defaults of the plan request (not configuration options).
DEFAULT_DEADLINE = "60s"
DEFAULT_MAX_DOWNTIME = "300ms"
DEFAULT_LINK_CAPACITY = "1Gbit/s"
DEFAULT_RUNS = 1000
# compare-orders: each profile costs four predictions and four plans
MAX_COMPARED_PROFILES = 64
# Defaults of profile capture.
DEFAULT_CAPTURE_BANDWIDTH = "8MB/s"


# -- option values ------------------------------------------------------------

# Settings options whose option names are their field names, and their
# bounds.
_SETTING_BOUNDS = (("check_interval", bounds.CHECK_INTERVAL),
                   ("switchover_time", bounds.SWITCHOVER_TIME),
                   ("send_backlog", bounds.SEND_BACKLOG),
                   ("setup_time", bounds.SETUP_TIME),
                   ("setup_time_sd", bounds.SETUP_TIME),
                   ("send_rate_sd", bounds.LOG_SPREAD),
                   ("max_rounds", bounds.MAX_ROUNDS))


def _settings(args, defaults):
    """The MigrationSettings fields other than bandwidth and limit."""
    from rtmig_nova import planning
    s = {
        "dirty_log": getattr(args, "dirty_log", None) or defaults.dirty_log,
        "order": getattr(args, "order", None) or defaults.send_order,
        "qemu_version": _qemu_version(args, defaults),
        "check_interval": defaults.check_interval,
        "switchover_time": defaults.switchover_time,
        "send_backlog": planning.send_backlog(defaults.send_queue_cap),
        "setup_time": defaults.setup_time,
        "setup_time_sd": defaults.setup_time_sd,
        "send_rate_sd": defaults.send_rate_sd,
        "max_rounds": defaults.max_rounds,
    }
    for field, bound in _SETTING_BOUNDS:
        text = getattr(args, field)
        if text is not None:
            s[field] = bound.parse(text, "--" + field.replace("_", "-"))
    if getattr(args, "link_rate", None) is not None:
        s["link_rate"] = bounds.LINK_RATE.parse(args.link_rate,
                                                "--link-rate")
    return s


def _qemu_version(args, defaults):
    from rtmig_nova import planning
    where = "--qemu-version" if args.qemu_version is not None \
        else "[rtmig] qemu_version"
    try:
        return planning.qemu_version(args.qemu_version
                                     or defaults.qemu_version)
    except ValueError as e:
        raise CliError(f"{where}: {e}") from None


def _bandwidth_and_limit(args):
    bw = bounds.BANDWIDTH.parse(args.bandwidth, "--bandwidth")
    limit = bounds.DOWNTIME_LIMIT.parse(args.downtime_limit,
                                        "--downtime-limit")
    return bw, limit


def _check_link_rate(settings, bw, args):
    """The stop-and-copy runs unthrottled: never slower than the limit
    (said here, naming both options, before the model says it of its
    link_rate field)."""
    link = settings.get("link_rate")
    if link is not None and link < bw:
        raise CliError(f"--link-rate: {args.link_rate} is below --bandwidth "
                       f"{args.bandwidth}: the link_rate of the "
                       f"stop-and-copy cannot be below the bandwidth limit")


def _model(args, defaults, **kwargs):
    from rtmig_nova import plugins
    name = args.model if args.model is not None else defaults.model
    # The message names where the name came from.
    where = "--model" if args.model is not None else "[rtmig] model"
    try:
        return plugins.load_model(name, **kwargs)
    except ValueError as e:
        raise CliError(f"{where}: {e}") from None


def _check_simulated(predictor, ref, profile):
    """The page-level simulator as a model refuses large guests before
    allocating, as ``simulate`` does: said of the option here."""
    if getattr(predictor, "name", None) == "montecarlo":
        bounds.SIMULATED_PAGES.check(
            profile.total_pages,
            f"--profile: {ref}: pages to simulate (--model montecarlo)")


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- commands -----------------------------------------------------------------

def cmd_predict(args, defaults):
    from rtmig_nova import model as rtmodel
    bw, limit = _bandwidth_and_limit(args)
    settings = _settings(args, defaults)
    _check_link_rate(settings, bw, args)
    ref, profile = resolve_profile(args, defaults)
    predictor = _model(args, defaults)
    _check_simulated(predictor, ref, profile)
    pred = rtmodel.predict(profile, bw, limit, model=predictor, **settings)
    if args.json:
        doc = pred.to_dict(QUANTILES)
        doc["profile"] = profile_info(ref, profile)
        print_json(doc)
        return EXIT_OK
    out = header_lines(ref, profile)
    out.append("Settings: " + settings_line(pred.settings, pred.model))
    out.append("")
    out.extend(prediction_lines(pred))
    emit(out)
    return EXIT_OK


def _plan_request(args, defaults):
    """(deadline s, max downtime s, confidence, link capacity bytes/s)
    of a plan's options."""
    deadline = bounds.DEADLINE.parse(
        args.deadline if args.deadline is not None else DEFAULT_DEADLINE,
        "--deadline")
    max_downtime = bounds.MAX_DOWNTIME.parse(
        args.max_downtime if args.max_downtime is not None
        else DEFAULT_MAX_DOWNTIME, "--max-downtime")
    confidence = bounds.CONFIDENCE.parse(args.confidence, "--confidence") \
        if args.confidence is not None else defaults.confidence
    link = bounds.LINK_RATE.parse(
        args.link_capacity if args.link_capacity is not None
        else DEFAULT_LINK_CAPACITY, "--link-capacity")
    return deadline, max_downtime, confidence, link


def cmd_plan(args, defaults):
    from rtmig_nova import model as rtmodel
    deadline, max_downtime, confidence, link = _plan_request(args, defaults)
    cpu_cost = bounds.CPU_COST_PER_PAGE.parse(
        args.cpu_cost_per_page, "--cpu-cost-per-page") \
        if args.cpu_cost_per_page is not None else defaults.cpu_cost_per_page
    settings = _settings(args, defaults)
    ref, profile = resolve_profile(args, defaults)
    predictor = _model(args, defaults)
    _check_simulated(predictor, ref, profile)
    pl = rtmodel.plan(profile, deadline, max_downtime, confidence,
                      link_capacity=link, cpu_cost_per_page=cpu_cost,
                      model=predictor, cpu_margin=defaults.cpu_margin,
                      deadline_period=defaults.deadline_period,
                      cgroup_period_us=defaults.cgroup_period, **settings)
    status = EXIT_INFEASIBLE if (args.fail_infeasible and not pl.feasible) \
        else EXIT_OK
    if args.json:
        doc = pl.to_dict()
        doc["profile"] = profile_info(ref, profile)
        print_json(doc)
        return status
    emit(plan_lines(ref, profile, pl, cpu_cost, defaults.cpu_margin,
                    predictor))
    return status


def cmd_compare_orders(args, defaults):
    from rtmig_nova.model import ordering
    from rtmig_nova.model.precopy import MigrationSettings
    bw, limit = _bandwidth_and_limit(args)
    deadline, max_downtime, confidence, link = _plan_request(args, defaults)
    settings = _settings(args, defaults)
    _check_link_rate(settings, bw, args)
    for field in ("dirty_log", "order"):
        settings.pop(field)
    refs = args.profile or [defaults.default_profile]
    if len(refs) > MAX_COMPARED_PROFILES:
        raise CliError(f"--profile: at most {MAX_COMPARED_PROFILES} "
                       f"profiles, got {len(refs)}")
    rows = []
    for ref in refs:
        where = "--profile" if args.profile else "[rtmig] default_profile"
        profile = load_profile(ref, where)
        found = ordering.compare(ref, profile, MigrationSettings(
            bandwidth=bw, downtime_limit=limit, **settings))
        plan_settings = {k: v for k, v in settings.items()
                         if k != "link_rate"}
        rows += ordering.least_bandwidths(
            found, profile, deadline, max_downtime, confidence, link,
            cpu_margin=defaults.cpu_margin,
            deadline_period=defaults.deadline_period,
            cgroup_period_us=defaults.cgroup_period, **plan_settings)
    if args.json:
        print_json({"bandwidth_bytes_per_s": bw,
                    "downtime_limit_s": limit, "deadline_s": deadline,
                    "max_downtime_s": max_downtime,
                    "confidence": confidence,
                    "link_capacity_bytes_per_s": link,
                    "rows": [dataclasses.asdict(r) for r in rows],
                    "effect": [{"profile": w, "dirty_log": log, **ratios}
                               for (w, log), ratios in
                               ordering.effect(rows).items()]})
        return EXIT_OK
    emit(ordering_lines(rows, ordering.effect(rows), bw, limit, deadline,
                        max_downtime, confidence, link))
    return EXIT_OK


def cmd_simulate(args, defaults):
    from tqdm import tqdm

    from rtmig_nova import model as rtmodel
    bw, limit = _bandwidth_and_limit(args)
    runs = bounds.RUNS.parse(args.runs, "--runs") \
        if args.runs is not None else DEFAULT_RUNS
    seed = bounds.SEED.parse(args.seed, "--seed") \
        if args.seed is not None else None
    settings = _settings(args, defaults)
    _check_link_rate(settings, bw, args)
    ref, profile = resolve_profile(args, defaults)
    # Refused before the simulator allocates its per-page arrays.
    bounds.SIMULATED_PAGES.check(
        profile.total_pages, f"--profile: {ref}: pages to simulate")
    show = args.progress if args.progress is not None \
        else _isatty(sys.stderr)
    start = time.monotonic()
    with tqdm(total=runs, file=sys.stderr, disable=not show,
              desc="rtmig simulate", unit="run", dynamic_ncols=True) as bar:
        def progress(done, total):
            bar.update(done - bar.n)

        pred = rtmodel.simulate(profile, bw, limit, runs=runs, seed=seed,
                                progress=progress, **settings)
    elapsed = time.monotonic() - start
    if args.json:
        doc = pred.to_dict(QUANTILES)
        doc["runs"] = runs
        doc["seed"] = seed
        doc["profile"] = profile_info(ref, profile)
        print_json(doc)
        return EXIT_OK
    out = header_lines(ref, profile)
    out.append("Settings: " + settings_line(pred.settings, pred.model))
    out.append(f"Simulated {runs} migrations"
               f"{'' if seed is None else f' (seed {seed})'} in "
               f"{units.format_duration(elapsed)}")
    out.append("")
    out.extend(prediction_lines(pred))
    emit(out)
    return EXIT_OK


def cmd_profile_show(args, defaults):
    ref, profile = resolve_profile(args, defaults)
    doc = profile_summary(ref, profile)
    if args.json:
        print_json(doc)
        return EXIT_OK
    emit(profile_show_lines(ref, profile, doc))
    return EXIT_OK


def cmd_profile_convert(args, defaults):
    src, dst = args.input, args.output
    in_kind = file_kind(src, "INPUT")
    out_kind = file_kind(dst, "OUTPUT")
    page_size = None
    if args.page_size is not None:
        page_size = bounds.check_page_size(
            units.parse_size(args.page_size, "--page-size"), "--page-size")
    zero = units.parse_int(args.zero_pages, "--zero-pages", minimum=0) \
        if args.zero_pages is not None else None
    if os.path.lexists(dst) and not args.force:
        raise CliError(f"OUTPUT: {dst} exists; use --force to overwrite it")
    if os.path.isdir(dst):
        raise CliError(f"OUTPUT: {dst} is a directory")
    meta = {"converted_from": os.path.basename(src)}
    try:
        profile = _convert_input(src, in_kind, page_size, zero, meta)
    except ValueError as e:     # ProfileError included: names the file
        msg = str(e)
        if not msg.startswith(src):
            msg = f"{src}: {msg}"
        raise CliError(f"INPUT: {msg}") from None
    suffix = ".json.gz" if dst.lower().endswith(".gz") else \
        os.path.splitext(dst)[1]
    with replacing(dst, suffix) as tmp:
        if out_kind == "json":
            profile.save(tmp)
        else:
            profile.save_csv(tmp)
    out = [f"wrote {dst}: {units.format_bytes(profile.memory_bytes)}, "
           f"{profile.total_pages} pages ({profile.active_pages} active, "
           f"{profile.idle_pages} idle), {profile.rates.size} rate bins"]
    if out_kind == "csv" and (profile.zero_pages or profile.page_size != 4096
                              or profile.metadata):
        out.append(f"note: a CSV histogram keeps rates and page counts "
                   f"only; page size ({profile.page_size} bytes), zero pages "
                   f"({profile.zero_pages}) and metadata are not stored")
    emit(out)
    return EXIT_OK


def _convert_input(src, in_kind, page_size, zero, meta):
    """The profile ``profile convert`` reads from ``src``."""
    import numpy as np

    from rtmig_nova.model import DirtyProfile
    if in_kind == "npy":
        arr = read_npy(src)
        return DirtyProfile.from_rates(
            np.asarray(arr, dtype=np.float64), page_size=page_size or 4096,
            zero_pages=zero or 0, metadata=meta)
    if in_kind == "csv":
        return DirtyProfile.load_csv(
            src, page_size=page_size or 4096, zero_pages=zero or 0,
            metadata=meta)
    profile = DirtyProfile.load(src)
    if page_size is not None or zero is not None:
        profile = DirtyProfile(
            profile.rates, profile.counts, profile.idle_pages,
            profile.zero_pages if zero is None else zero,
            profile.page_size if page_size is None else page_size,
            profile.metadata, laws=profile.laws)
    return profile


def _capture_output(args):
    """The checked --output path of profile capture."""
    dst = args.output
    if file_kind(dst, "OUTPUT") != "json":
        raise CliError(f"--output: {dst}: expected .json or .json.gz")
    if os.path.lexists(dst) and not args.force:
        raise CliError(f"--output: {dst} exists; use --force to overwrite "
                       f"it")
    if os.path.isdir(dst):
        raise CliError(f"--output: {dst} is a directory")
    if not os.path.isdir(os.path.dirname(os.path.abspath(dst))):
        raise CliError(f"--output: {dst}: no such directory")
    return dst


def _save_profile(profile, dst):
    suffix = ".json.gz" if dst.lower().endswith(".gz") else ".json"
    with replacing(dst, suffix) as tmp:
        profile.save(tmp)


def _capture_coarse(args):
    from rtmig_nova.capture import dirtyrate, probe
    if args.domain is None:
        raise CliError("--coarse needs --domain NAME (libvirt's dirty-rate "
                       "calculation)")
    for opt, value in (("--bandwidth", args.bandwidth),
                       ("--first-pass-bandwidth", args.first_pass_bandwidth),
                       ("--rounds", args.rounds)):
        if value is not None:
            raise CliError(f"{opt} goes with a probe migration, not with "
                           f"--coarse")
    seconds = bounds.DIRTY_RATE_SECONDS.parse(
        args.duration if args.duration is not None else "1s", "--duration")
    if seconds != int(seconds):
        raise CliError(f"--duration: --coarse takes whole seconds from 1 to "
                       f"60, got {args.duration!r}")
    dst = _capture_output(args)
    try:
        profile = dirtyrate.capture_domain_coarse(
            args.domain, args.uri or probe.DEFAULT_URI, int(seconds))
    except probe.ProbeError as e:
        raise CliError(str(e)) from None
    _save_profile(profile, dst)
    rate = profile.metadata["aggregate_dirty_rate_bytes_per_s"]
    if args.json:
        print_json({"output": dst, "target": f"domain {args.domain}",
                    "coarse": True, "calc_seconds": int(seconds),
                    "dirty_rate_bytes_per_s": rate,
                    "total_pages": profile.total_pages,
                    "page_size": profile.page_size})
        return EXIT_OK
    emit([f"measured domain {args.domain}: dirty rate "
          f"{units.format_rate(rate)} over {int(seconds)} s (libvirt "
          f"dirty-rate calculation; no migration)",
          f"wrote {dst}: COARSE profile (one rate spread over "
          f"{units.format_bytes(profile.memory_bytes)}); a probe capture "
          f"gives the per-page rates the model needs"])
    return EXIT_OK


def cmd_profile_capture(args, defaults):
    from rtmig_nova.capture import probe
    if (args.domain is None) == (args.qmp is None):
        raise CliError("give either --domain NAME or --qmp PATH "
                       "--trace-file PATH")
    if args.qmp is not None and args.trace_file is None:
        raise CliError("--qmp needs --trace-file PATH (QEMU's -trace "
                       "file=PATH)")
    if args.domain is not None and args.trace_file is not None:
        raise CliError("--trace-file goes with --qmp; a libvirt domain's "
                       "trace is read from its log file")
    if args.qmp is not None and args.uri is not None:
        raise CliError("--uri goes with --domain")
    if args.coarse:
        return _capture_coarse(args)
    duration = None
    if args.duration is not None:
        duration = bounds.CAPTURE_DURATION.parse(args.duration, "--duration")
    bandwidth = bounds.CAPTURE_BANDWIDTH.parse(
        args.bandwidth if args.bandwidth is not None
        else DEFAULT_CAPTURE_BANDWIDTH, "--bandwidth")
    first_bw = None
    if args.first_pass_bandwidth is not None:
        first_bw = bounds.CAPTURE_BANDWIDTH.parse(args.first_pass_bandwidth,
                                                  "--first-pass-bandwidth")
    rounds = bounds.CAPTURE_ROUNDS.parse(args.rounds, "--rounds") \
        if args.rounds is not None else None
    dst = _capture_output(args)

    def progress(r):
        sys.stderr.write(f"round {r.index}: {r.pages} pages dirtied in "
                         f"{units.format_duration(r.interval)} "
                         f"({units.format_duration(r.elapsed)} elapsed)\n")
        sys.stderr.flush()

    def announce(schedule):
        sys.stderr.write(f"capturing: {schedule.describe()}\n")
        if duration is not None and duration < schedule.first_pass_s:
            sys.stderr.write(
                f"warning: --duration {units.format_duration(duration)} may "
                f"end before the first pass "
                f"({units.format_duration(schedule.first_pass_s)} at most): "
                f"then no round is observed\n")
        sys.stderr.flush()

    kwargs = {"duration": duration, "bandwidth": bandwidth,
              "first_pass_bandwidth": first_bw, "max_rounds": rounds,
              "progress": progress, "announce": announce}
    try:
        if args.domain is not None:
            res = probe.capture_domain(args.domain,
                                       args.uri or probe.DEFAULT_URI,
                                       **kwargs)
            target = f"domain {args.domain}"
        else:
            res = probe.capture_qmp(args.qmp, args.trace_file, **kwargs)
            target = f"QEMU at {args.qmp}"
    except probe.ProbeError as e:
        raise CliError(str(e)) from None
    profile = res.profile
    _save_profile(profile, dst)
    if args.json:
        print_json({
            "output": dst, "target": target, "rounds": res.rounds,
            "cycles": res.cycles, "zero_pages": profile.zero_pages,
            "probe_seconds": res.duration,
            "mean_interval_s": (sum(res.intervals) / len(res.intervals)),
            "first_pass_pages": res.first_pass_pages,
            "bytes_sent": res.bytes_sent, "log_rotations": res.log_rotations,
            "restored_parameters": res.restored,
            "total_pages": profile.total_pages,
            "schedule": dataclasses.asdict(res.schedule),
            "active_pages": profile.active_pages,
            "idle_pages": profile.idle_pages,
            "write_rate_per_s": profile.write_rate,
            "page_size": profile.page_size})
        return EXIT_OK
    mean = sum(res.intervals) / len(res.intervals)
    emit([f"captured {target}: {res.rounds} rounds of {res.cycles} probe "
          f"migration{'s' if res.cycles != 1 else ''} in "
          f"{units.format_duration(res.duration)} (mean interval "
          f"{units.format_duration(mean)}), probe migration cancelled and "
          f"parameters restored",
          f"wrote {dst}: {units.format_bytes(profile.memory_bytes)}, "
          f"{profile.total_pages} pages ({profile.active_pages} active, "
          f"{profile.idle_pages} idle, {profile.zero_pages} of them zero), "
          f"write rate "
          f"{units.format_number(profile.write_rate)} pages/s"])
    return EXIT_OK
