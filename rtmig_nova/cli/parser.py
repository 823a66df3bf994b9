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

"""The ``rtmig`` command line: options, help texts and sub"""

import argparse

from rtmig_nova.cli.commands import (
    DEFAULT_DEADLINE, DEFAULT_LINK_CAPACITY, DEFAULT_MAX_DOWNTIME,
    DEFAULT_CAPTURE_BANDWIDTH, DEFAULT_RUNS,
    cmd_compare_orders, cmd_plan, cmd_predict, cmd_profile_capture,
    cmd_profile_convert, cmd_profile_show, cmd_simulate)
from rtmig_nova.cli.errors import PROG, CliError
from rtmig_nova.cli.reserve import (
    DEFAULT_MIGRATION_PORTS, DEFAULT_URI, cmd_reserve_apply,
    cmd_reserve_release, cmd_reserve_show)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and an exception."""

    def error(self, message):
        raise CliError(f"{message} (see '{self.prog} --help')")


def _version():
    try:
        from importlib import metadata
        return metadata.version("rtmig-nova")
    except Exception:  # not installed: running from a source tree
        return "unknown"


def _add_global_options(parser, suppress):
    """--config-file and --debug, accepted before or after the subcommand
    (after it, ``suppress`` keeps an absent option from resetting the value
    given before it)."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config-file", metavar="PATH", default=default,
        help="read the [rtmig] options (the defaults of the model settings "
             "and of --state-dir) from this oslo.config file; without it "
             "the built-in option defaults are used and no file is "
             "searched for")
    parser.add_argument(
        "--debug", action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show a traceback on internal errors")


def _add_profile_option(parser):
    parser.add_argument(
        "--profile", metavar="P",
        help="dirty-page profile: a file (.json or .json.gz) or builtin:NAME "
             "(default: [rtmig] default_profile, builtin:default)")


def _add_plan_request_options(parser):
    """A plan's request: deadline, downtime bound, confidence, link."""
    parser.add_argument("--deadline", metavar="DUR",
                        help=f"time for the whole migration (default: "
                             f"{DEFAULT_DEADLINE})")
    parser.add_argument("--max-downtime", metavar="DUR",
                        help=f"longest the guest may be stopped (default: "
                             f"{DEFAULT_MAX_DOWNTIME})")
    parser.add_argument("--confidence", metavar="P",
                        help="required probability in (0, 1), e.g. 0.95 or "
                             "95%% (default: [rtmig] confidence, 0.95)")
    parser.add_argument("--link-capacity", metavar="RATE",
                        help=f"what the migration link can carry (default: "
                             f"{DEFAULT_LINK_CAPACITY})")


def _add_model_options(parser, model=True, link_rate=True, orders=True):
    g = parser.add_argument_group(
        "model settings (defaults from the [rtmig] options)")
    if model:
        g.add_argument(
            "--model", metavar="NAME",
            help="model plugin: precopy, geometric, qemu-estimate, "
                 "montecarlo, or another installed one "
                 "(default: [rtmig] model, precopy)")
    if orders:
        g.add_argument("--dirty-log", choices=("sync", "clear"),
                       help="dirty-log semantics (default: [rtmig] "
                            "dirty_log, sync)")
        g.add_argument("--order", choices=("address", "rate"),
                       help="send order of the pages in a round (default: "
                            "[rtmig] send_order, address)")
    g.add_argument("--qemu-version", metavar="VER",
                   help="the QEMU release that migrates, e.g. 10.0: how its "
                        "rate limit counts bytes (default: [rtmig] "
                        "qemu_version; auto: 7.2 here, the host's QEMU "
                        "where rtmig reads a host)")
    g.add_argument("--switchover-time", metavar="DUR",
                   help="fixed extra downtime for device state and the "
                        "switch-over, e.g. 20ms (default: [rtmig] "
                        "switchover_time, 0 s)")
    g.add_argument("--send-backlog", metavar="SIZE",
                   help="bytes queued ahead of the stop-and-copy in the "
                        "migration socket and the link, sent during the "
                        "downtime, e.g. 128KiB (default: what [rtmig] "
                        "send_queue_cap lets a capped socket hold, the cap "
                        "+ 128 KiB; 0 without a cap)")
    g.add_argument("--setup-time", metavar="DUR",
                   help="fixed time before the first page is sent, added to "
                        "the total time, e.g. 300ms (default: [rtmig] "
                        "setup_time, 0 s)")
    g.add_argument("--setup-time-sd", metavar="DUR",
                   help="standard deviation of the setup time (default: "
                        "[rtmig] setup_time_sd, 0 s)")
    g.add_argument("--send-rate-sd", metavar="X",
                   help="relative spread of the host's send rate from one "
                        "migration to the next, e.g. 0.03 (default: "
                        "[rtmig] send_rate_sd, 0)")
    if link_rate:
        g.add_argument("--link-rate", metavar="RATE",
                       help="rate of the stop-and-copy, which QEMU sends "
                            "without its bandwidth limit, e.g. 1Gbit/s "
                            "(default: the bandwidth)")
    g.add_argument("--check-interval", metavar="DUR",
                   help="QEMU's pending-size check period (default: [rtmig] "
                        "check_interval, 100 ms)")
    g.add_argument("--max-rounds", metavar="N",
                   help="rounds after which a migration counts as not "
                        "converging (default: [rtmig] max_rounds, 200)")


def _add_json_option(parser):
    parser.add_argument(
        "--json", action="store_true",
        help="print one JSON document instead of the table (infinite "
             "values, i.e. not converged, are null)")


def build_parser():
    common = OneLineErrorParser(add_help=False)
    _add_global_options(common, suppress=True)

    parser = OneLineErrorParser(
        prog=PROG,
        description="Predict and size QEMU pre-copy live migrations of "
                    "soft real-time guests from their dirty-page profile, "
                    "and apply and release the host reservations they "
                    "need.",
        epilog="Units: sizes in bytes (4096, 4KiB, 2GB), rates in bytes/s "
               "(125e6, 100MiB/s, 1Gbit/s), durations in seconds (0.3, "
               "300ms, 2min).  Exit status: 0 success (an infeasible plan "
               "too, unless --fail-infeasible: 1), 2 bad input, 3 internal "
               "error.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {_version()}")
    _add_global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                required=True,
                                parser_class=OneLineErrorParser)

    p = sub.add_parser(
        "predict", parents=[common],
        help="predict one migration at a given bandwidth",
        description="Predict total time, downtime, bytes sent and rounds "
                    "of one migration: mean, p50, p95, p99 and the "
                    "probability that it converges.")
    _add_profile_option(p)
    p.add_argument("--bandwidth", metavar="RATE", required=True,
                   help="migration bandwidth, e.g. 100MiB/s or 1Gbit/s")
    p.add_argument("--downtime-limit", metavar="DUR", required=True,
                   help="QEMU downtime-limit, e.g. 300ms")
    _add_model_options(p)
    _add_json_option(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "plan", parents=[common],
        help="least bandwidth, downtime-limit and CPU to meet a deadline",
        description="Find the least migration bandwidth, the QEMU "
                    "downtime-limit and the CPU reservation of the migration "
                    "thread such that P(total time <= deadline and downtime "
                    "<= max-downtime) >= confidence.  An infeasible request "
                    "is an answer, not an error: the exit status is 0 "
                    "unless --fail-infeasible is given.")
    _add_profile_option(p)
    _add_plan_request_options(p)
    p.add_argument("--cpu-cost-per-page", metavar="DUR",
                   help="migration-thread CPU time per page sent, e.g. "
                        "2.5us (default: [rtmig] cpu_cost_per_page)")
    p.add_argument("--fail-infeasible", action="store_true",
                   help="exit with status 1 when the request is infeasible")
    _add_model_options(p, link_rate=False)
    _add_json_option(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "simulate", parents=[common],
        help="page-level Monte-Carlo simulation of many migrations",
        description="Simulate RUNS migrations page by page (the reference "
                    "the analytic model is validated against; slow on "
                    "large guests).")
    _add_profile_option(p)
    p.add_argument("--bandwidth", metavar="RATE", required=True,
                   help="migration bandwidth, e.g. 100MiB/s or 1Gbit/s")
    p.add_argument("--downtime-limit", metavar="DUR", required=True,
                   help="QEMU downtime-limit, e.g. 300ms")
    p.add_argument("--runs", metavar="N",
                   help=f"migrations to simulate (default: {DEFAULT_RUNS})")
    p.add_argument("--seed", metavar="S",
                   help="random seed, an integer >= 0 (default: fresh "
                        "entropy)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", action="store_true", default=None,
                   help="show a progress bar on stderr (default: when "
                        "stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never show the progress bar")
    _add_model_options(p, model=False)
    _add_json_option(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "compare-orders", parents=[common],
        help="address order against cold-first order, both dirty logs",
        description="Predict each profile's migration under QEMU's send "
                    "order (by address) and cold-first order (hot pages "
                    "last, the proposal of Checconi, Cucinotta and Stein), "
                    "each under both dirty-log semantics (sync: TCG and "
                    "KVM without manual protection; clear: "
                    "KVM_CLEAR_DIRTY_LOG): P(converge), median total time, "
                    "downtime and bytes sent, and the least bandwidth a "
                    "deadline and downtime bound need.")
    p.add_argument("--profile", metavar="P", action="extend", nargs="+",
                   help="dirty-page profiles, files or builtin:NAME; "
                        "several after one --profile or the option "
                        "repeated (default: [rtmig] default_profile)")
    p.add_argument("--bandwidth", metavar="RATE", required=True,
                   help="migration bandwidth of the predictions")
    p.add_argument("--downtime-limit", metavar="DUR", required=True,
                   help="QEMU downtime-limit of the predictions")
    _add_plan_request_options(p)
    _add_model_options(p, model=False, orders=False)
    _add_json_option(p)
    p.set_defaults(func=cmd_compare_orders)

    p = sub.add_parser(
        "profile", parents=[common], help="show or convert dirty profiles",
        description="Inspect and convert dirty-page profiles.")
    psub = p.add_subparsers(dest="profile_command", metavar="COMMAND",
                            required=True, parser_class=OneLineErrorParser)
    q = psub.add_parser(
        "show", parents=[common], help="summarise a profile",
        description="Memory, pages, write and dirty rates, a per-decade "
                    "histogram of page write rates, and the metadata.")
    _add_profile_option(q)
    _add_json_option(q)
    q.set_defaults(func=cmd_profile_show)
    q = psub.add_parser(
        "convert", parents=[common], help="convert between profile formats",
        description="INPUT by extension: .npy (per-page write rates, "
                    "writes/s, float array), .csv (histogram, header "
                    "'rate_per_s,pages'; rate 0 = idle pages), .json or "
                    ".json.gz (profile file).  OUTPUT by extension: .json "
                    "or .json.gz (profile file) or .csv (histogram).")
    q.add_argument("input", metavar="INPUT")
    q.add_argument("output", metavar="OUTPUT")
    q.add_argument("--page-size", metavar="SIZE",
                   help="bytes per page, e.g. 4KiB (default: 4096 for .npy "
                        "and .csv input; a profile file keeps its own)")
    q.add_argument("--zero-pages", metavar="N",
                   help="idle pages that hold only zero bytes (default: 0 "
                        "for .npy and .csv input; a profile file keeps its "
                        "own)")
    q.add_argument("--force", action="store_true",
                   help="overwrite OUTPUT if it exists")
    q.set_defaults(func=cmd_profile_convert)
    q = psub.add_parser(
        "capture", parents=[common],
        help="capture a running guest's profile with a probe migration",
        description="Run a throttled pre-copy migration of a running guest "
                    "into a local sink that drops the stream, with QEMU's "
                    "trace events migration_bitmap_sync_end and "
                    "ram_save_page on, for DUR; then cancel it, put the "
                    "migration parameters and trace events back, and write "
                    "the profile of the observed rounds.  The guest keeps "
                    "running.  QEMU needs the log trace backend and -msg "
                    "timestamp=on (libvirt passes it).  A libvirt domain "
                    "is reached through libvirt's QMP passthrough (the "
                    "domain is marked tainted: custom-monitor) and its "
                    "trace read from /var/log/libvirt/qemu/NAME.log (root).")
    g = q.add_argument_group("guest (one of)")
    g.add_argument("--domain", metavar="NAME",
                   help="a running libvirt domain")
    g.add_argument("--uri", metavar="URI",
                   help=f"libvirt connection (default: {DEFAULT_URI})")
    g.add_argument("--qmp", metavar="PATH",
                   help="the QMP unix socket of a plain QEMU")
    g.add_argument("--trace-file", metavar="PATH",
                   help="with --qmp: the file of its -trace file=PATH")
    q.add_argument("--duration", metavar="DUR",
                   help="how long the probe migrations run, first pass "
                        "included (default: the first pass's longest time "
                        "plus 15 s of rounds; said before the capture "
                        "starts)")
    q.add_argument("--bandwidth", metavar="RATE",
                   help=f"max-bandwidth of the probe migration; low enough "
                        f"that it never converges (default: "
                        f"{DEFAULT_CAPTURE_BANDWIDTH})")
    q.add_argument("--first-pass-bandwidth", metavar="RATE",
                   help="max-bandwidth of each probe's first pass, which "
                        "observes one interval only (default: from the "
                        "guest's size, a first pass of at most 10 s, at "
                        "least 32 MiB/s, and QEMU's migration thread within "
                        "half a CPU)")
    q.add_argument("--rounds", metavar="N",
                   help="stop once N rounds after the first pass are "
                        "observed (default: run for the whole --duration)")
    q.add_argument("--coarse", action="store_true",
                   help="no probe migration: one aggregate dirty rate from "
                        "libvirt's dirty-rate calculation (--domain only; "
                        "--duration in whole seconds, 1-60, default 1s); "
                        "the profile is flagged coarse")
    q.add_argument("--output", metavar="PROFILE", required=True,
                   help="the profile file to write (.json or .json.gz)")
    q.add_argument("--force", action="store_true",
                   help="overwrite --output if it exists")
    _add_json_option(q)
    q.set_defaults(func=cmd_profile_capture)

    _add_reserve_parser(sub, common)
    from rtmig_nova.cli import experiment
    experiment.add_parser(sub, common, _add_json_option)
    from rtmig_nova.cli import flavor
    flavor.add_parser(sub, common, _add_json_option)
    return parser


def _add_state_dir_option(parser):
    parser.add_argument(
        "--state-dir", metavar="DIR",
        help="directory of the reservations' state files (default: [rtmig] "
             "reservation_state_dir, /var/lib/rtmig-nova/reservations)")


def _add_reserve_parser(sub, common):
    p = sub.add_parser(
        "reserve", parents=[common],
        help="apply, show and release host reservations of a migration",
        description="Apply a migration plan's reservations on this host "
                    "(libvirt migration speed and downtime, cgroup CPU "
                    "bandwidth, SCHED_DEADLINE, HTB traffic shaping), all "
                    "or nothing, list them, and release them.  Needs root "
                    "for SCHED_DEADLINE and shaping, and a libvirt "
                    "connection for the domain.")
    rsub = p.add_subparsers(dest="reserve_command", metavar="COMMAND",
                            required=True, parser_class=OneLineErrorParser)

    q = rsub.add_parser(
        "apply", parents=[common], help="apply a reservation",
        description="Build the steps (migration, cpu, deadline per thread, "
                    "shaping) from --plan and the options, and apply them "
                    "all or none: if one fails, the ones before it are "
                    "undone.  What to restore is recorded in the state "
                    "directory before each change; 'rtmig reserve release "
                    "ID' undoes it.  Explicit options override the plan.")
    g = q.add_argument_group("domain")
    g.add_argument("--domain", metavar="NAME", required=True,
                   help="the running libvirt domain (name or UUID)")
    g.add_argument("--uri", metavar="URI", default=DEFAULT_URI,
                   help=f"libvirt connection (default: {DEFAULT_URI})")
    g = q.add_argument_group(
        "migration controls (libvirt migration speed and maximum downtime)")
    g.add_argument("--plan", metavar="FILE",
                   help="the JSON of 'rtmig plan --json' ('-': standard "
                        "input); must be feasible.  Gives the bandwidth, "
                        "the downtime-limit and the CPU defaults below")
    g.add_argument("--bandwidth", metavar="RATE",
                   help="migration bandwidth, e.g. 50MiB/s (default: the "
                        "plan's bandwidth_bytes_per_s; libvirt sets whole "
                        "MiB/s, rounded up)")
    g.add_argument("--downtime-limit", metavar="DUR",
                   help="maximum downtime, e.g. 300ms (default: the plan's "
                        "downtime_limit_s; whole ms, rounded down)")
    g = q.add_argument_group(
        "CPU (CFS bandwidth of the domain's cgroups, whole microseconds)")
    g.add_argument("--emulator-quota", metavar="DUR",
                   help="CPU time per period of the emulator cgroup, which "
                        "holds QEMU's migration thread (default: the plan's "
                        "cpu.quota_us)")
    g.add_argument("--emulator-period", metavar="DUR",
                   help="its period, 1ms..1s (default: the plan's "
                        "cpu.cgroup_period_us, else [rtmig] cgroup_period)")
    g.add_argument("--vcpu-quota", metavar="DUR",
                   help="CPU time per period of each vCPU (default: "
                        "unchanged)")
    g.add_argument("--vcpu-period", metavar="DUR",
                   help="its period, 1ms..1s (default: [rtmig] "
                        "cgroup_period)")
    g = q.add_argument_group("SCHED_DEADLINE (whole nanoseconds)")
    g.add_argument("--deadline-thread", metavar="TID", action="append",
                   help="a thread to put under SCHED_DEADLINE; repeatable")
    g.add_argument("--deadline-vcpus", action="store_true",
                   help="the domain's vCPU threads too")
    g.add_argument("--deadline-runtime", metavar="DUR",
                   help="runtime per period (default: the plan's "
                        "cpu.runtime_ns)")
    g.add_argument("--deadline-period", metavar="DUR",
                   help="period (default: the plan's cpu.period_ns)")
    g.add_argument("--deadline-deadline", metavar="DUR",
                   help="relative deadline (default: the plan's "
                        "cpu.deadline_ns with the plan's period, else the "
                        "period)")
    g.add_argument("--deadline-reclaim", action="store_true",
                   help="SCHED_FLAG_RECLAIM: the threads may also run on "
                        "CPU time no reservation uses, so the runtime is "
                        "a guarantee, not a cap ([rtmig] "
                        "migration_thread_reclaim for the Nova driver)")
    g = q.add_argument_group(
        "traffic shaping (HTB on the migration interface; optional)")
    g.add_argument("--interface", metavar="IF",
                   help="the migration interface; its root qdisc becomes "
                        "an HTB whose migration class gets the migration "
                        "bandwidth")
    g.add_argument("--netns", metavar="NS",
                   help="network namespace of the interface (default: the "
                        "current one)")
    g.add_argument("--link-capacity", metavar="RATE",
                   help="what the link carries, e.g. 1Gbit/s; required "
                        "with --interface")
    g.add_argument("--migration-ports", metavar="LO-HI",
                   help=f"destination ports of the migration stream "
                        f"(default: {DEFAULT_MIGRATION_PORTS[0]}-"
                        f"{DEFAULT_MIGRATION_PORTS[1]}, libvirt's "
                        f"migration port range)")
    g.add_argument("--migration-peer", metavar="ADDR",
                   help="destination address or prefix of the migration "
                        "(default: any)")
    g = q.add_argument_group("record")
    g.add_argument("--label", metavar="TEXT", default="",
                   help="a note kept with the reservation")
    _add_state_dir_option(g)
    q.add_argument("--json", action="store_true",
                   help="print one JSON document {id, label, state_file, "
                        "applied} instead of the table")
    q.set_defaults(func=cmd_reserve_apply)

    q = rsub.add_parser(
        "show", parents=[common], help="list the recorded reservations",
        description="The reservations recorded in the state directory: "
                    "id, label, creation time and the undo record of each "
                    "applied step.")
    _add_state_dir_option(q)
    q.add_argument("--json", action="store_true",
                   help="print one JSON document instead of the table")
    q.set_defaults(func=cmd_reserve_show)

    q = rsub.add_parser(
        "release", parents=[common], help="release reservations",
        description="Undo a reservation's steps in reverse order and remove "
                    "its record.  Idempotent: an unknown or already "
                    "released ID is not an error.")
    q.add_argument("id", metavar="ID", nargs="?",
                   help="the reservation to release")
    q.add_argument("--all", action="store_true",
                   help="release every recorded reservation (also those "
                        "a crash left behind)")
    _add_state_dir_option(q)
    q.add_argument("--json", action="store_true",
                   help="print one JSON document instead of the text")
    q.set_defaults(func=cmd_reserve_release)
