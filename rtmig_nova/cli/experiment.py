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

"""``rtmig experiment validate``: the model against real migrations on the
two-host testbed (:mod:`rtmig_nova.testbed.validation`); ``rtmig
experiment calibrate``: the host's fixed costs alone, for ``--calibration``;
``rtmig experiment isolation``: a real-time guest's frame deadlines during
its migration, stock and with rtmig (:mod:`rtmig_nova.testbed.isolation`).
"""

import contextlib
import dataclasses
import csv
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from rtmig_nova import bounds
from rtmig_nova.cli.errors import EXIT_OK, CliError
from rtmig_nova.cli.output import emit, print_json

DEFAULT_OUTPUT_DIR = "rtmig-validation"
DEFAULT_ISOLATION_DIR = "rtmig-isolation"
ISOLATION_REPETITIONS = 5
# s a run of the isolation experiment takes on this machine, for the
# estimate printed up front (boots, 8 s of streaming, the migration)
ISOLATION_RUN_S = {"stock": 60, "auto-converge": 60, "rtmig": 50}
ISOLATION_CAPTURE_S = 45     # the rtmig profile's capture, boot included


def add_parser(sub, common, add_json_option):
    p = sub.add_parser(
        "experiment", parents=[common],
        help="experiments on the two-host testbed (root)",
        description="Experiments on the two-host libvirt testbed of this "
                    "machine (rtmig_nova.testbed).")
    esub = p.add_subparsers(dest="experiment_command", metavar="COMMAND",
                            required=True, parser_class=type(p))
    from rtmig_nova.testbed import cases as v
    q = esub.add_parser(
        "validate", parents=[common],
        help="check predictions against real live migrations",
        description="For every workload x bandwidth x repetition: boot a "
                    "testbed guest on host A, capture its profile with a "
                    "probe migration, predict the migration with the "
                    "precopy model and the two baselines, live-migrate it "
                    "to host B for real, and record what QEMU measured.  "
                    "Writes validation.csv, validation.png, "
                    "validation-reliability.png, validation.md, "
                    "calibration.json, meta.json and the captured "
                    "profiles (profiles/) to --output-dir.  Needs root, "
                    "QEMU and "
                    "libvirt (host A's libvirtd running); builds the guest "
                    "image first.  A run takes about 20-60 s.")
    q.add_argument("--workloads", metavar="NAMES",
                   default=",".join(w.label for w in v.DEFAULT_WORKLOADS),
                   help="comma-separated, of: %s (default: all)" % ", ".join(
                       w.label for w in v.DEFAULT_WORKLOADS))
    q.add_argument("--bandwidths", metavar="RATES",
                   help="comma-separated migration bandwidths, whole MiB/s, "
                        "for every workload (default: each workload's own, "
                        "from near non-convergence to ample: %s)" % "; ".join(
                            "%s %s MiB/s" % (w.label, ", ".join(
                                "%d" % (b // v.MIB) for b in w.bandwidths))
                            for w in v.DEFAULT_WORKLOADS))
    q.add_argument("--repetitions", metavar="N",
                   default=str(v.DEFAULT_REPETITIONS),
                   help="runs per workload and bandwidth (default: "
                        "%(default)s)")
    q.add_argument("--downtime-limit", metavar="DUR",
                   default="%gms" % (v.DEFAULT_DOWNTIME_LIMIT * 1000),
                   help="QEMU downtime-limit of every run (default: "
                        "%(default)s)")
    q.add_argument("--capture-duration", metavar="DUR",
                   default="%gs" % v.DEFAULT_CAPTURE_S,
                   help="probe migration per run (default: %(default)s)")
    q.add_argument("--calibration-runs", metavar="N",
                   default=str(v.DEFAULT_CALIBRATION_RUNS),
                   help="idle-guest migrations that measure the host's "
                        "setup time, switch-over time and link rate first "
                        "(0: none, the models then use the [rtmig] "
                        "defaults) (default: %(default)s)")
    q.add_argument("--calibration", metavar="FILE",
                   help="the calibration.json of an earlier `experiment "
                        "validate` on this host, used instead of "
                        "calibrating again (--calibration-runs is then "
                        "ignored)")
    q.add_argument("--link", choices=("unshaped", "shaped"),
                   default="unshaped",
                   help="unshaped: the veth as it is; shaped: each real "
                        "migration over an HTB class capped at what QEMU "
                        "sends (a 1 Gbit/s link), its stream paced at the "
                        "class's rate with its unsent bytes capped at 64 "
                        "KiB, as the Nova driver does with [rtmig] "
                        "migration_interface and send_queue_cap = 65536 "
                        "(default: "
                        "%(default)s)")
    q.add_argument("--output-dir", metavar="DIR", default=DEFAULT_OUTPUT_DIR,
                   help="where the CSV, plot and report go (default: "
                        "%(default)s)")
    add_json_option(q)
    q.set_defaults(func=cmd_experiment_validate)
    c = esub.add_parser(
        "calibrate", parents=[common],
        help="measure the testbed host's fixed migration costs",
        description="Migrate an idle guest between the testbed's hosts: a "
                    "discarded warm-up, then --repetitions times at 32 "
                    "MiB/s, 8 MiB/s and without a limit, and write the "
                    "host's setup time (and its spread), switch-over time, "
                    "link rate and send efficiency, the medians, to "
                    "--output: the calibration.json that `experiment "
                    "validate --calibration` and `experiment isolation "
                    "--calibration` take.  Needs root, QEMU and libvirt "
                    "(host A's libvirtd running).  About 15 s a migration.")
    c.add_argument("--repetitions", metavar="N", default="3",
                   help="rounds of the three migrations (default: "
                        "%(default)s)")
    c.add_argument("--link", choices=("unshaped", "shaped"),
                   default="unshaped",
                   help="shaped: the two rate-limited migrations over the "
                        "shaped link of `experiment validate --link "
                        "shaped` (default: %(default)s)")
    c.add_argument("--output", metavar="FILE", default="calibration.json",
                   help="the calibration to write (default: %(default)s)")
    add_json_option(c)
    c.set_defaults(func=cmd_experiment_calibrate)
    r = esub.add_parser(
        "report", parents=[common],
        help="score a validation experiment again with this build's models",
        description="Predict every run of a finished `experiment validate` "
                    "again from the profiles it kept (profiles/) and its "
                    "calibration.json, with this build's models, and "
                    "write validation.csv, validation.png, "
                    "validation-reliability.png and validation.md anew "
                    "(the measurements stay).  Needs no root and no testbed.")
    r.add_argument("--output-dir", metavar="DIR", default=DEFAULT_OUTPUT_DIR,
                   help="the experiment's directory (default: %(default)s)")
    add_json_option(r)
    r.set_defaults(func=cmd_experiment_report)
    i = esub.add_parser(
        "isolation", parents=[common],
        help="a real-time guest's frame deadlines during live migration",
        description="On the testbed's LAN, host A runs a real-time video "
                    "guest streaming 40 ms frames to a client behind host "
                    "B, a CPU-burning neighbour and a bulk TCP flow over "
                    "the 100 Mbit/s link; the video guest is live-migrated "
                    "to B under each scenario (stock: Nova's defaults; "
                    "auto-converge; rtmig: captured profile, plan, CPU and "
                    "link reservations, planned bandwidth and downtime "
                    "limit).  Writes isolation.csv, isolation-lateness.png, "
                    "isolation-timeline.png, isolation.md, the profile and "
                    "the runs' records (runs/) to --output-dir; a restart "
                    "resumes from the runs there.  Needs root, QEMU and "
                    "libvirt (host A's libvirtd running).")
    i.add_argument("--scenarios", metavar="NAMES",
                   default=",".join(v.ISOLATION_SCENARIOS),
                   help="comma-separated, of: %s (default: all)"
                        % ", ".join(v.ISOLATION_SCENARIOS))
    i.add_argument("--repetitions", metavar="N",
                   default=str(ISOLATION_REPETITIONS),
                   help="runs per scenario (default: %(default)s)")
    i.add_argument("--calibration", metavar="FILE",
                   help="a calibration.json of `experiment validate` for "
                        "the rtmig plan's setup and switch-over times "
                        "(default: the [rtmig] options)")
    i.add_argument("--output-dir", metavar="DIR",
                   default=DEFAULT_ISOLATION_DIR,
                   help="where the CSV, plots and report go (default: "
                        "%(default)s)")
    add_json_option(i)
    i.set_defaults(func=cmd_experiment_isolation)


def _workloads(text):
    from rtmig_nova.testbed import cases as v
    known = {w.label: w for w in v.DEFAULT_WORKLOADS}
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CliError("--workloads: give at least one name")
    bad = [n for n in names if n not in known]
    if bad:
        raise CliError(f"--workloads: unknown {', '.join(bad)}; have "
                       f"{', '.join(known)}")
    return [known[n] for n in dict.fromkeys(names)]


def _bandwidths(text):
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        item = item.strip()
        # A bare number is MiB/s, as --help says; one with a unit is a rate.
        bare = re.fullmatch(r"[0-9]+(\.[0-9]*)?", item) is not None
        try:
            rate = bounds.BANDWIDTH.parse(item + "MiB/s" if bare else item,
                                          "--bandwidths")
        except bounds.BoundError:
            raise
        except ValueError:
            raise CliError(f"--bandwidths: invalid value {item!r}; expected "
                           f"whole MiB/s as 8, or a rate as 8MiB/s, "
                           f"100Mbit/s") from None
        if rate < 2 ** 20:
            raise CliError(f"--bandwidths: {item} is below 1 MiB/s, "
                           f"libvirt's unit")
        out.append(rate)
    if not out:
        raise CliError("--bandwidths: give at least one rate")
    return out


def _qemu_version():
    try:
        out = subprocess.run(["qemu-system-x86_64", "--version"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.split("\n")[0].replace("QEMU emulator version ",
                                                 "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _can_run(name, root_for, output_dir):
    """Refuse (CliError) an experiment that cannot run here: no matplotlib
    for its plots, not root, an ``output_dir`` that is a file."""
    try:
        import matplotlib  # noqa: F401  (the report's plots)
    except ImportError:
        raise CliError(f"experiment {name} needs matplotlib for its plots: "
                       f"pip install 'rtmig-nova[plot]'") from None
    if os.geteuid() != 0:
        raise CliError(f"experiment {name} needs root (network namespaces, "
                       f"a second libvirtd, {root_for})")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise CliError(f"--output-dir: {output_dir} is not a directory")


def _boot_files(prefix):
    """(kernel, initramfs) of the testbed guest, the Debian packages it
    needs installed first, built in a new directory QEMU (libvirt-qemu)
    can read."""
    from rtmig_nova.testbed import image
    try:
        image.ensure_packages(image.ALL_PACKAGES)
    except image.ImageError as e:
        raise CliError(str(e)) from None
    build_dir = tempfile.mkdtemp(prefix=prefix)
    os.chmod(build_dir, 0o755)
    return build_dir, (image.find_kernel(), image.build_initramfs(build_dir))


@contextlib.contextmanager
def _guest_image(prefix, needed=True):
    """(build directory, boot files) of the testbed guest
    (:func:`_boot_files`) for the block's testbed (its workdir goes in the
    build directory), removed after it; kept when the testbed fails
    (hosts.TestbedError, raised as a CliError that names it).  Not
    ``needed``: (None, None), nothing built."""
    if not needed:
        yield None, None
        return
    from rtmig_nova.testbed import hosts
    build_dir, boot_files = _boot_files(prefix)
    try:
        yield build_dir, boot_files
    except hosts.TestbedError as e:
        raise CliError(f"{e} (the testbed's files: {build_dir})") from None
    shutil.rmtree(build_dir, ignore_errors=True)


# s one idle migration of the calibration takes here (boot included)
CALIBRATION_MIGRATION_S = 15
CALIBRATION_LEGS = 3        # migrations per repetition


def cmd_experiment_calibrate(args, defaults):
    from tqdm import tqdm

    from rtmig_nova.testbed import hosts
    from rtmig_nova.testbed import validation as v
    reps = bounds.REPETITIONS.parse(args.repetitions, "--repetitions")
    out = os.path.abspath(args.output)
    if os.path.isdir(out):
        raise CliError(f"--output: {args.output} is a directory")
    if not os.path.isdir(os.path.dirname(out)):
        raise CliError(f"--output: {os.path.dirname(out)}: no such "
                       f"directory")
    if os.geteuid() != 0:
        raise CliError("experiment calibrate needs root (network "
                       "namespaces, a second libvirtd, QEMU's log files)")
    link = v.ShapedLink() if args.link == "shaped" else None
    migrations = 1 + reps * CALIBRATION_LEGS    # the warm-up first
    print(f"rtmig experiment calibrate: {migrations} idle migrations, about "
          f"{migrations * CALIBRATION_MIGRATION_S / 60:.0f} min",
          file=sys.stderr)
    # a step each: the warm-up, then each repetition
    with _guest_image("rtmig-calibrate-") as (build_dir, boot_files), \
            tqdm(total=1 + reps, file=sys.stderr, desc="rtmig calibrate",
                 unit="step", dynamic_ncols=True,
                 disable=not sys.stderr.isatty()) as bar:
        begun = []

        def log(message):       # each message starts a step, ending one
            bar.update(1 if begun else 0)
            begun.append(message)
            bar.set_postfix_str(message)
        bed = hosts.up(os.path.join(build_dir, "testbed"))
        try:
            calibration = v.calibrate(bed, boot_files, reps, log=log,
                                      link=link)
        finally:
            bed.down()
        bar.update(1)
    calibration["date"] = datetime.datetime.now(
        datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        with open(out, "w") as f:
            json.dump(calibration, f, indent=1)
    except OSError as e:
        raise CliError(f"--output: {args.output}: {e.strerror}") from None
    if args.json:
        print_json({"output": args.output,
                    **{k: val for k, val in calibration.items()
                       if k not in ("runs", "warmup")}})
        return EXIT_OK
    emit([f"wrote {args.output}", "  " + _calibration_line(calibration)])
    return EXIT_OK


def cmd_experiment_validate(args, defaults):
    from tqdm import tqdm

    from rtmig_nova.testbed import report
    from rtmig_nova.testbed import validation as v
    workloads = _workloads(args.workloads)
    bandwidths = None if args.bandwidths is None else \
        _bandwidths(args.bandwidths)
    reps = bounds.REPETITIONS.parse(args.repetitions, "--repetitions")
    # 0 calibration runs: take the calibration of the defaults.
    cal_runs = dataclasses.replace(bounds.REPETITIONS, low=0).parse(
        args.calibration_runs, "--calibration-runs")
    limit = bounds.DOWNTIME_LIMIT.parse(args.downtime_limit,
                                        "--downtime-limit")
    capture_s = bounds.CAPTURE_DURATION.parse(args.capture_duration,
                                              "--capture-duration")
    given_calibration = _calibration(args.calibration)
    link = v.ShapedLink() if args.link == "shaped" else None
    if not limit <= 10:
        # The testbed's guests migrate in seconds: a longer limit stops
        # them at once and validates nothing.
        raise CliError(f"--downtime-limit: must be in (0, 10] s, got "
                       f"{args.downtime_limit}")
    # Counted before the runs are listed (a long --bandwidths list times
    # 1000 repetitions would be millions of them).
    count = reps * sum(len(w.bandwidths if bandwidths is None
                           else bandwidths) for w in workloads)
    if not bounds.EXPERIMENT_RUNS.contains(count):
        raise CliError(
            f"--workloads, --bandwidths, --repetitions: {count} runs "
            f"({len(workloads)} workload{'s' if len(workloads) != 1 else ''}"
            f" x "
            f"{'their' if bandwidths is None else len(bandwidths)} "
            f"bandwidths x {reps} repetitions) is outside the "
            f"{bounds.EXPERIMENT_RUNS.what} range, "
            f"{bounds.EXPERIMENT_RUNS.range_text} "
            f"({bounds.EXPERIMENT_RUNS.why})")
    _can_run("validate", "QEMU's log files", args.output_dir)
    runs = v.plan_runs(workloads, bandwidths, reps)
    start = datetime.datetime.now(datetime.timezone.utc)
    with _guest_image("rtmig-validate-") as (build_dir, boot_files), \
            tqdm(total=len(runs), file=sys.stderr, desc="rtmig validate",
                 unit="run", dynamic_ncols=True,
                 disable=not sys.stderr.isatty()) as bar:
        def progress(done, total, res):
            bar.update(done - bar.n)
            what = "error: " + res.error if res.error else (
                "timed out" if res.timed_out else "%.2f s, downtime %.0f ms"
                % (res.measured["total_time_s"],
                   1000 * res.measured["downtime_s"]))
            bar.write(f"{done}/{total} {res.workload} rep {res.repetition} "
                      f"{res.bandwidth / v.MIB:.0f} MiB/s: {what}",
                      file=sys.stderr)
        results, calibration = v.run_experiment(
            os.path.join(build_dir, "testbed"), boot_files, runs,
            downtime_limit=limit, capture_s=capture_s,
            calibration_runs=cal_runs, calibration=given_calibration,
            link=link,
            profile_dir=os.path.join(args.output_dir, "profiles"),
            progress=progress, log=lambda m: bar.write(m, file=sys.stderr))
    meta = {"date": start.strftime("%Y-%m-%d %H:%M UTC"),
            "qemu": _qemu_version(),
            "workloads": "; ".join(f"{w.label} = {w.cmdline()}, "
                                   f"{w.memory_mib} MiB"
                                   for w in workloads),
            "bandwidths": "; ".join(
                f"{w.label} " + ", ".join(
                    f"{b / v.MIB:.0f}" for b in (
                        w.bandwidths if bandwidths is None else bandwidths))
                + " MiB/s" for w in workloads),
            "repetitions": reps,
            "downtime limit": f"{limit * 1000:g} ms",
            "capture": f"probe migrations for {capture_s:g} s at "
                       f"{v.DEFAULT_PROBE_BANDWIDTH / v.MIB:.0f} MiB/s "
                       f"after a first pass at "
                       f"{v.PROBE_FIRST_PASS_BANDWIDTH / v.MIB:.0f} MiB/s, of "
                       f"a twin of the migrated guest",
            "machine": f"{os.cpu_count()} cores, accel TCG",
            "link": "unshaped veth" if link is None else (
                f"shaped: HTB on A's end of a {link.link_rate * 8 / 1e9:g} "
                f"Gbit/s link, the migration's class capped at what QEMU "
                f"sends, its stream paced at the class's rate, unsent "
                f"bytes capped at {link.send_cap // 1024} KiB")}
    if given_calibration is not None:
        meta["calibration from"] = args.calibration
    if calibration:
        meta[CALIBRATION_META] = _calibration_line(calibration)
    # Kept before the report is drawn: with them `experiment report` can
    # score the runs again whatever happens to the report.
    with open(os.path.join(args.output_dir, "calibration.json"), "w") as f:
        json.dump(calibration, f, indent=1)
    with open(os.path.join(args.output_dir, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)
    paths, summary = report.write_report([r.flat() for r in results],
                                         args.output_dir, meta)
    return _emit_summary(args, paths, summary)


META_FILE = "meta.json"     # the report's setup lines, for a re-score
# meta.json's line on the calibration the models were given.
CALIBRATION_META = "calibration (idle guest, medians)"


def _calibration_line(calibration):
    """The report's line on ``calibration`` (a calibration.json)."""
    from rtmig_nova.testbed import validation as v

    def ms(key, digits=0):
        value = calibration.get(key)
        return "?" if not isinstance(value, (int, float)) \
            else f"{value * 1000:.{digits}f}"
    link = calibration.get("link_rate_bytes_per_s")
    link = f"{link / v.MIB:.0f} MiB/s" if isinstance(link, (int, float)) \
        else "?"
    eff = calibration.get("send_efficiency")
    eff = f"{eff:.3f}" if isinstance(eff, (int, float)) else "?"
    over = ", rate-limited legs over the shaped link" \
        if calibration.get("shaped_link") else ""
    return (f"setup {ms('setup_time_s')} ms (sd {ms('setup_time_sd_s')} "
            f"ms), switch-over {ms('switchover_time_s', 1)} ms, link "
            f"{link}, send efficiency {eff}{over} (used by every model)")


def cmd_experiment_report(args, defaults):
    from rtmig_nova.model.profile import ProfileError
    from rtmig_nova.testbed import report
    from rtmig_nova.testbed import validation as v
    out = args.output_dir
    csv_path = os.path.join(out, "validation.csv")
    try:
        rows = report.read_csv(csv_path)
        with open(os.path.join(out, "calibration.json")) as f:
            calibration = json.load(f)
    except OSError as e:
        raise CliError(f"--output-dir: {e.filename}: {e.strerror} (is "
                       f"{out} an `experiment validate` directory?)") \
            from None
    except (ValueError, csv.Error) as e:
        raise CliError(f"--output-dir: {out}: {' '.join(str(e).split())}") \
            from None
    if calibration is not None and not isinstance(calibration, dict):
        raise CliError(f"--output-dir: {out}/calibration.json is not an "
                       f"object")
    try:
        with open(os.path.join(out, META_FILE)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    meta["generated by"] = "rtmig experiment report"
    meta["re-scored"] = datetime.datetime.now(
        datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        # Its derived values made again by this build, from the idle
        # migrations it keeps, and kept with them.
        derived = v.recalibrated(calibration)
        if derived:
            meta[CALIBRATION_META] = _calibration_line(derived)
        rows = v.rescore(rows, os.path.join(out, "profiles"), derived)
        paths, summary = report.write_report(rows, out, meta)
        if derived != calibration:
            with open(os.path.join(out, "calibration.json"), "w") as f:
                json.dump(derived, f, indent=1)
    except (ProfileError, KeyError, TypeError, ValueError, ArithmeticError,
            AttributeError) as e:
        raise CliError(f"--output-dir: {out}: cannot re-score: "
                       f"{type(e).__name__}: "
                       f"{' '.join(str(e).split())[:200]}") from None
    return _emit_summary(args, paths, summary)


def _emit_summary(args, paths, summary):
    from rtmig_nova.testbed import report
    if args.json:
        print_json({"outputs": list(paths), "summary": summary,
                    "targets": report.verdict(summary)})
        return EXIT_OK
    lines = [f"wrote {', '.join(paths)}"]
    for model in report.MODELS:
        s = summary[model]
        if s.get("runs"):
            lines.append(
                f"  {model:14s} total time median error "
                f"{100 * s['total_time_median_rel_error']:.1f}%, downtime "
                f"{100 * s['downtime_median_rel_error']:.1f}% "
                f"({1000 * (s['downtime_median_abs_error_s'] or 0):.1f} ms)"
                f", measured total in the predicted 5-95% "
                f"{100 * s['total_time_in_p5_p95']:.0f}%"
                f" over {s['runs']} runs")
    for target, ok in report.verdict(summary).items():
        lines.append(f"  {target}: {'met' if ok else 'missed'}")
    emit(lines)
    return EXIT_OK


def _scenarios(text):
    from rtmig_nova.testbed import cases
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in cases.ISOLATION_SCENARIOS]
    if unknown or not names:
        raise CliError(f"--scenarios: {', '.join(unknown) or 'none given'}"
                       f": have {', '.join(cases.ISOLATION_SCENARIOS)}")
    return list(dict.fromkeys(names))


def _calibration(path):
    if path is None:
        return None
    try:
        with open(path) as f:
            calibration = json.load(f)
    except OSError as e:
        raise CliError(f"--calibration: {path}: {e.strerror}") from None
    except ValueError as e:
        raise CliError(f"--calibration: {path}: not JSON: "
                       f"{' '.join(str(e).split())}") from None
    from rtmig_nova.model import precopy
    from rtmig_nova.testbed import validation as v
    if not isinstance(calibration, dict):
        raise CliError(f"--calibration: {path}: not a calibration (a JSON "
                       f"object)")
    try:
        settings = v.model_settings(calibration)
        if "qemu_version" in settings:
            precopy.qemu_version(settings["qemu_version"])
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise CliError(f"--calibration: {path}: "
                       f"{' '.join(str(e).split())}") from None
    return calibration


def _check_profile(output_dir, todo):
    """Refuse a resumed experiment whose profile.json does not load (the
    rtmig runs to do plan from it), before the testbed comes up."""
    from rtmig_nova.model.profile import DirtyProfile, ProfileError
    from rtmig_nova.testbed import isolation
    path = os.path.join(output_dir, isolation.PROFILE_NAME)
    if any(s == "rtmig" for s, _ in todo) and os.path.exists(path):
        try:
            DirtyProfile.load(path)
        except ProfileError as e:
            raise CliError(f"--output-dir: {e} (remove it to capture "
                           f"anew)") from None


def cmd_experiment_isolation(args, defaults):
    from tqdm import tqdm

    from rtmig_nova.testbed import isolation
    from rtmig_nova.testbed import isolation_report
    scenarios = _scenarios(args.scenarios)
    reps = bounds.REPETITIONS.parse(args.repetitions, "--repetitions")
    calibration = _calibration(args.calibration)
    _can_run("isolation", "tc, SCHED_DEADLINE", args.output_dir)
    runs = isolation.plan_runs(scenarios, reps)
    try:
        done = isolation.read_rows(args.output_dir)
    except (OSError, ValueError, KeyError) as e:
        raise CliError(f"--output-dir: {args.output_dir}: cannot resume: "
                       f"{' '.join(str(e).split())}") from None
    todo = [r for r in runs
            if r not in done or not isolation.measured(done[r])]
    _check_profile(args.output_dir, todo)
    minutes = sum(ISOLATION_RUN_S[s] for s, _ in todo) / 60.0
    if any(s == "rtmig" for s, _ in todo) and not os.path.exists(
            os.path.join(args.output_dir, isolation.PROFILE_NAME)):
        minutes += ISOLATION_CAPTURE_S / 60.0
    print(f"rtmig experiment isolation: {len(todo)} of {len(runs)} runs to "
          f"do, about {minutes:.0f} min", file=sys.stderr)
    start = datetime.datetime.now(datetime.timezone.utc)
    setup = isolation.Setup()
    # nothing to do: no image to build, only the report to write
    with _guest_image("rtmig-isolation-", needed=bool(todo)) as (
            build_dir, boot_files), \
            tqdm(total=len(todo), file=sys.stderr, desc="rtmig isolation",
                 unit="run", dynamic_ncols=True,
                 disable=not sys.stderr.isatty()) as bar:
        def progress(k, total, row):
            bar.update(k - bar.n)
            what = "error: " + row["error"] if row.get("error") else (
                "%.1f s, downtime %s ms, longest gap %.0f ms, %d/%d misses"
                % (row["total_time_s"], "?" if row["downtime_ms"] is None
                   else "%.0f" % row["downtime_ms"], row["max_gap_ms"],
                   row["misses"], row["frames"]))
            bar.write(f"{row['scenario']} run {row['run']}: {what}",
                      file=sys.stderr)
        isolation.run_experiment(
            args.output_dir, os.path.join(build_dir or "", "testbed"),
            boot_files, runs, setup, calibration, progress,
            log=lambda m: bar.write(m, file=sys.stderr))
    thread = "reclaiming" if setup.migration_thread_reclaim else "capped"
    meta = {"date": start.strftime("%Y-%m-%d %H:%M UTC"),
            "qemu": _qemu_version(),
            "machine": f"{os.cpu_count()} cores, accel TCG",
            "link": f"{setup.link_rate * 8 / 1e6:g} Mbit/s each way",
            "RT guest": f"video {dict(setup.video)}, {setup.memory_mib} MiB,"
                        f" {setup.period_s * 1e3:g} ms frames, miss beyond "
                        f"{setup.tolerance_s * 1e3:g} ms",
            "request": f"deadline {setup.deadline_s:g} s, downtime "
                       f"{setup.max_downtime_s * 1e3:g} ms, confidence "
                       f"{setup.confidence:g}, vCPU "
                       f"{setup.vcpu_reservation}"
                       f"{' reclaiming' if setup.vcpu_reclaim else ''}, "
                       f"migration thread {thread}, "
                       f"stream "
                       f"{setup.stream_rate / 1e3:g} kB/s",
            "calibration": args.calibration or "none ([rtmig] defaults)"}
    try:
        paths, summary = isolation_report.write_report(args.output_dir,
                                                       meta)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise CliError(f"--output-dir: {args.output_dir}: cannot write the "
                       f"report: {' '.join(str(e).split())}") from None
    verdict = isolation_report.verdict(summary)
    if args.json:
        print_json({"outputs": paths, "summary": summary,
                    "targets": verdict})
        return EXIT_OK
    lines = [f"wrote {', '.join(paths)}"]
    for scenario, s in summary.items():
        lines.append(
            f"  {scenario:14s} {s['runs']} runs: deadline met "
            f"{s['deadline_met']}, freeze within bound "
            f"{s['gap_within_bound']}, misses {s['misses']}/{s['frames']}")
    for target, ok in (verdict or {}).items():
        lines.append(f"  {target}: {'met' if ok else 'missed'}")
    emit(lines)
    return EXIT_OK
