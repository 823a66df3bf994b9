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

"""The ``rtmig`` command: predict, plan and simulate pre-copy migrations.

Subcommands (see ``docs/cli.md`` for options, output and JSON keys)::

    rtmig predict  --bandwidth RATE --downtime-limit DUR
    rtmig plan     [--deadline DUR] [--max-downtime DUR] ...
    rtmig simulate --bandwidth RATE --downtime-limit DUR [--runs N]
    rtmig profile show [--profile P]
    rtmig profile convert INPUT OUTPUT

Exit status: 0 on success (an infeasible ``plan`` is an answer: also 0,
unless ``--fail-infeasible``, then 1); 2 for bad input or usage, with one
line ``rtmig: error: <message>`` on stderr; 3 for an internal error (a bug;
``--debug`` shows the traceback); 130 when interrupted.
"""

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from importlib import resources

from rtmig_nova import units

PROG = "rtmig"
EXIT_OK = 0
EXIT_INFEASIBLE = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

BUILTIN_PREFIX = "builtin:"
_PROFILE_SUFFIXES = ("-profile.json", "-profile.json.gz")

# Defaults of the plan request (not configuration options).
DEFAULT_DEADLINE = "60s"
DEFAULT_MAX_DOWNTIME = "300ms"
DEFAULT_LINK_CAPACITY = "1Gbit/s"
DEFAULT_RUNS = 1000
QUANTILES = (0.5, 0.95, 0.99)
# Windows of the aggregate dirty rates that `profile show` reports, seconds.
DIRTY_RATE_WINDOWS = (0.1, 1.0)

SYNTHETIC_NOTE = "SYNTHETIC profile (not captured from a guest)"
COARSE_NOTE = "COARSE profile (aggregate dirty rate only)"
NOT_CONVERGED = "not converged"


class CliError(Exception):
    """Bad input or usage: reported as one line, exit status 2."""


# -- argument parsing ---------------------------------------------------------

class _Parser(argparse.ArgumentParser):
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
        help="read the [rtmig] options (the defaults of the model settings) "
             "from this oslo.config file; without it the built-in option "
             "defaults are used and no file is searched for")
    parser.add_argument(
        "--debug", action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show a traceback on internal errors")


def _add_profile_option(parser):
    parser.add_argument(
        "--profile", metavar="P",
        help="dirty-page profile: a file (.json or .json.gz) or builtin:NAME "
             "(default: [rtmig] default_profile, builtin:default)")


def _add_model_options(parser, model=True):
    g = parser.add_argument_group(
        "model settings (defaults from the [rtmig] options)")
    if model:
        g.add_argument(
            "--model", metavar="NAME",
            help="model plugin: precopy, geometric, qemu-estimate, "
                 "montecarlo, or another installed one "
                 "(default: [rtmig] model, precopy)")
    g.add_argument("--dirty-log", choices=("sync", "clear"),
                   help="dirty-log semantics (default: [rtmig] dirty_log, "
                        "sync)")
    g.add_argument("--order", choices=("address", "rate"),
                   help="send order of the pages in a round (default: "
                        "[rtmig] send_order, address)")
    g.add_argument("--switchover-time", metavar="DUR",
                   help="fixed extra downtime for device state and the "
                        "switch-over, e.g. 20ms (default: [rtmig] "
                        "switchover_time, 0 s)")
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
    common = _Parser(add_help=False)
    _add_global_options(common, suppress=True)

    parser = _Parser(
        prog=PROG,
        description="Predict and size QEMU pre-copy live migrations of "
                    "soft real-time guests from their dirty-page profile.",
        epilog="Units: sizes in bytes (4096, 4KiB, 2GB), rates in bytes/s "
               "(125e6, 100MiB/s, 1Gbit/s), durations in seconds (0.3, "
               "300ms, 2min).  Exit status: 0 success (an infeasible plan "
               "too, unless --fail-infeasible: 1), 2 bad input, 3 internal "
               "error.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {_version()}")
    _add_global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                required=True, parser_class=_Parser)

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
    p.add_argument("--deadline", metavar="DUR",
                   help=f"time for the whole migration (default: "
                        f"{DEFAULT_DEADLINE})")
    p.add_argument("--max-downtime", metavar="DUR",
                   help=f"longest the guest may be stopped (default: "
                        f"{DEFAULT_MAX_DOWNTIME})")
    p.add_argument("--confidence", metavar="P",
                   help="required probability in (0, 1), e.g. 0.95 or 95%% "
                        "(default: [rtmig] confidence, 0.95)")
    p.add_argument("--link-capacity", metavar="RATE",
                   help=f"what the migration link can carry (default: "
                        f"{DEFAULT_LINK_CAPACITY})")
    p.add_argument("--cpu-cost-per-page", metavar="DUR",
                   help="migration-thread CPU time per page sent, e.g. "
                        "2.5us (default: [rtmig] cpu_cost_per_page)")
    p.add_argument("--fail-infeasible", action="store_true",
                   help="exit with status 1 when the request is infeasible")
    _add_model_options(p)
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
        "profile", parents=[common], help="show or convert dirty profiles",
        description="Inspect and convert dirty-page profiles.")
    psub = p.add_subparsers(dest="profile_command", metavar="COMMAND",
                            required=True, parser_class=_Parser)
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
    return parser


# -- configuration ------------------------------------------------------------

@dataclasses.dataclass
class Defaults:
    """The [rtmig] option values, read once."""
    model: str
    dirty_log: str
    send_order: str
    check_interval: float
    switchover_time: float
    max_rounds: int
    confidence: float
    cpu_cost_per_page: float
    cpu_margin: float
    deadline_period: float
    cgroup_period: int
    default_profile: str


def load_defaults(config_file=None):
    """Read the [rtmig] options from ``config_file`` (or only their
    defaults).  oslo.config never searches /etc or ~ here."""
    from oslo_config import cfg

    from rtmig_nova import conf

    files = []
    if config_file is not None:
        if not os.path.isfile(config_file):
            raise CliError(f"--config-file: {config_file}: no such file")
        files = [config_file]
    try:
        # No search of /etc or ~, and no OS_RTMIG__* environment variables:
        # the defaults are the options' own or those of config_file.
        conf.CONF(args=[], project="rtmig-nova", default_config_files=files,
                  default_config_dirs=[], use_env=False)
        group = conf.CONF.rtmig
        return Defaults(**{f.name: getattr(group, f.name)
                           for f in dataclasses.fields(Defaults)})
    except cfg.Error as e:
        raise CliError(f"--config-file: {e}") from None
    finally:
        # Leave the global CONF as found (tests call main() repeatedly).
        conf.CONF.clear()


# -- input --------------------------------------------------------------------

def _data_dir():
    return resources.files("rtmig_nova").joinpath("data")


def builtin_profiles():
    """``{NAME: resource}`` of the profiles shipped in rtmig_nova/data."""
    found = {}
    try:
        entries = list(_data_dir().iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        for suffix in _PROFILE_SUFFIXES:
            if entry.name.endswith(suffix):
                found[entry.name[:-len(suffix)]] = entry
    return dict(sorted(found.items()))


def load_profile(ref):
    """A DirtyProfile from a path or ``builtin:NAME``."""
    from rtmig_nova.model import DirtyProfile, ProfileError

    if ref.startswith(BUILTIN_PREFIX):
        name = ref[len(BUILTIN_PREFIX):]
        available = builtin_profiles()
        if name not in available:
            names = ", ".join(BUILTIN_PREFIX + n for n in available) \
                or "none"
            raise CliError(f"--profile: unknown builtin profile {ref!r}; "
                           f"available: {names}")
        with resources.as_file(available[name]) as path:
            return DirtyProfile.load(path)
    if not ref:
        raise CliError("--profile: empty profile path")
    try:
        return DirtyProfile.load(os.path.expanduser(ref))
    except ProfileError as e:
        raise CliError(f"--profile: {e}") from None


def _profile(args, defaults):
    ref = args.profile if args.profile is not None \
        else defaults.default_profile
    return ref, load_profile(ref)


def _positive(value, name):
    if not value > 0:
        raise CliError(f"{name}: must be > 0, got {value:g}")
    return value


def _settings(args, defaults):
    """The MigrationSettings fields other than bandwidth and limit."""
    s = {
        "dirty_log": args.dirty_log or defaults.dirty_log,
        "order": args.order or defaults.send_order,
        "check_interval": defaults.check_interval,
        "switchover_time": defaults.switchover_time,
        "max_rounds": defaults.max_rounds,
    }
    if args.check_interval is not None:
        s["check_interval"] = _positive(units.parse_duration(
            args.check_interval, "--check-interval"), "--check-interval")
    if args.switchover_time is not None:
        s["switchover_time"] = units.parse_duration(
            args.switchover_time, "--switchover-time")
    if args.max_rounds is not None:
        s["max_rounds"] = units.parse_int(args.max_rounds, "--max-rounds",
                                          minimum=1)
    return s


def _bandwidth_and_limit(args):
    bw = _positive(units.parse_rate(args.bandwidth, "--bandwidth"),
                   "--bandwidth")
    limit = _positive(units.parse_duration(args.downtime_limit,
                                           "--downtime-limit"),
                      "--downtime-limit")
    return bw, limit


def _model(args, defaults, **kwargs):
    from rtmig_nova import plugins
    name = args.model if args.model is not None else defaults.model
    try:
        return plugins.load_model(name, **kwargs)
    except ValueError as e:
        raise CliError(f"--model: {e}") from None


# -- output -------------------------------------------------------------------

def jsonable(obj):
    """``obj`` as plain JSON data: non-finite floats (not converged)
    become None, numpy scalars Python numbers, tuples lists."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "item") and callable(obj.item):   # numpy scalar
        try:
            return jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    return str(obj)


def print_json(obj, out=None):
    out = out or sys.stdout
    out.write(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def _is_true(value):
    return value is True or (isinstance(value, str)
                             and value.strip().lower() in ("true", "yes",
                                                           "1"))


def profile_flags(profile):
    meta = profile.metadata
    return {"synthetic": _is_true(meta.get("synthetic")),
            "coarse": profile.coarse}


def profile_notes(profile):
    flags = profile_flags(profile)
    notes = []
    if flags["synthetic"]:
        notes.append(SYNTHETIC_NOTE)
    if flags["coarse"]:
        notes.append(COARSE_NOTE)
    return notes


def _profile_info(ref, profile):
    return {"name": ref, "memory_bytes": profile.memory_bytes,
            "page_size_bytes": profile.page_size, **profile_flags(profile)}


def _table(header, rows, indent="  "):
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(str(r[i])) for r in [header] + rows)
              for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [str(r[0]).ljust(widths[0])] + \
            [str(c).rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _fmt_rounds(x, inf=NOT_CONVERGED):
    if not math.isfinite(x):
        return inf
    return str(int(x)) if float(x).is_integer() else units.format_number(x)


def _fmt_bytes(x, inf=NOT_CONVERGED):
    return units.format_bytes(x, inf=inf)


def prediction_lines(pred):
    """The prediction table and its convergence lines."""
    rows = []
    any_inf = False
    for label, dist, fmt in (
            ("total time", pred.total_time, units.format_duration),
            ("downtime", pred.downtime, units.format_duration),
            ("bytes sent", pred.bytes_sent, _fmt_bytes),
            ("rounds", pred.rounds, _fmt_rounds)):
        values = [dist.mean] + [dist.quantile(q) for q in QUANTILES]
        any_inf |= not all(math.isfinite(v) for v in values)
        rows.append([label] + [fmt(v, inf=NOT_CONVERGED) for v in values])
    header = ["", "mean"] + [f"p{round(q * 100)}" for q in QUANTILES]
    lines = _table(header, rows)
    p = pred.converges
    lines.append(f"  P(converge within {pred.settings.max_rounds} rounds): "
                 f"{units.format_probability(p)}")
    if any_inf:
        lines.append(f"  '{NOT_CONVERGED}': infinite, the migration does not "
                     f"converge with probability "
                     f"{units.format_probability(1.0 - p)}")
    return lines


def settings_line(st, model):
    return (f"model {model}, bandwidth {units.format_rate(st.bandwidth)} "
            f"({st.bandwidth:.0f} bytes/s), downtime-limit "
            f"{units.format_duration(st.downtime_limit)}, dirty log "
            f"{st.dirty_log}, order {st.order}, check interval "
            f"{units.format_duration(st.check_interval)}, switch-over "
            f"{units.format_duration(st.switchover_time)}, max "
            f"{st.max_rounds} rounds")


def profile_line(ref, profile):
    return (f"Profile: {ref} ({units.format_bytes(profile.memory_bytes)}, "
            f"{profile.total_pages} pages of {profile.page_size} bytes)")


def _header(ref, profile, out):
    out.append(profile_line(ref, profile))
    for note in profile_notes(profile):
        out.append(f"  {note}")


def _emit(lines):
    sys.stdout.write("\n".join(lines) + "\n")


# -- commands -----------------------------------------------------------------

def cmd_predict(args, defaults):
    from rtmig_nova import model as rtmodel
    bw, limit = _bandwidth_and_limit(args)
    settings = _settings(args, defaults)
    ref, profile = _profile(args, defaults)
    predictor = _model(args, defaults)
    pred = rtmodel.predict(profile, bw, limit, model=predictor, **settings)
    if args.json:
        doc = pred.to_dict(QUANTILES)
        doc["profile"] = _profile_info(ref, profile)
        print_json(doc)
        return EXIT_OK
    out = []
    _header(ref, profile, out)
    out.append("Settings: " + settings_line(pred.settings, pred.model))
    out.append("")
    out.extend(prediction_lines(pred))
    _emit(out)
    return EXIT_OK


def cmd_plan(args, defaults):
    from rtmig_nova import model as rtmodel
    deadline = _positive(units.parse_duration(
        args.deadline if args.deadline is not None else DEFAULT_DEADLINE,
        "--deadline"), "--deadline")
    max_downtime = _positive(units.parse_duration(
        args.max_downtime if args.max_downtime is not None
        else DEFAULT_MAX_DOWNTIME, "--max-downtime"), "--max-downtime")
    confidence = units.parse_probability(args.confidence, "--confidence") \
        if args.confidence is not None else defaults.confidence
    link = _positive(units.parse_rate(
        args.link_capacity if args.link_capacity is not None
        else DEFAULT_LINK_CAPACITY, "--link-capacity"), "--link-capacity")
    cpu_cost = units.parse_duration(args.cpu_cost_per_page,
                                    "--cpu-cost-per-page") \
        if args.cpu_cost_per_page is not None else defaults.cpu_cost_per_page
    settings = _settings(args, defaults)
    ref, profile = _profile(args, defaults)
    predictor = _model(args, defaults)
    pl = rtmodel.plan(profile, deadline, max_downtime, confidence,
                      link_capacity=link, cpu_cost_per_page=cpu_cost,
                      model=predictor, cpu_margin=defaults.cpu_margin,
                      deadline_period=defaults.deadline_period,
                      cgroup_period_us=defaults.cgroup_period, **settings)
    status = EXIT_INFEASIBLE if (args.fail_infeasible and not pl.feasible) \
        else EXIT_OK
    if args.json:
        doc = pl.to_dict()
        doc["profile"] = _profile_info(ref, profile)
        print_json(doc)
        return status
    _emit(plan_lines(ref, profile, pl, cpu_cost, defaults.cpu_margin,
                     predictor))
    return status


def plan_lines(ref, profile, pl, cpu_cost, cpu_margin, predictor):
    out = []
    _header(ref, profile, out)
    model_name = getattr(predictor, "name", type(predictor).__name__)
    out.append(
        f"Request: deadline {units.format_duration(pl.deadline)}, max "
        f"downtime {units.format_duration(pl.max_downtime)}, confidence "
        f"{pl.confidence:g},")
    out.append(
        f"         link capacity {units.format_rate(pl.link_capacity)} "
        f"({pl.link_capacity:.0f} bytes/s), model {model_name}")
    out.append("")
    if pl.feasible:
        out.append("Feasible:        yes")
    else:
        out.append("Feasible:        NO")
        out.append(f"Reason:          {pl.reason}")
    bw_note = "" if pl.feasible else "  (the link capacity: the best there is)"
    out.append(f"Bandwidth:       {pl.bandwidth / 2**20:.1f} MiB/s "
               f"({pl.bandwidth:.0f} bytes/s){bw_note}")
    if pl.downtime_limit:
        out.append(f"Downtime limit:  {pl.downtime_limit * 1000:.0f} ms")
    else:
        out.append("Downtime limit:  none")
    out.append(f"Probability:     {units.format_probability(pl.probability)}"
               f"  P(total time <= {units.format_duration(pl.deadline)} and "
               f"downtime <= {units.format_duration(pl.max_downtime)}), "
               f"required {pl.confidence:g}")
    cpu = pl.cpu
    out.append(f"CPU share:       {cpu.share:.4f} of one CPU "
               f"({units.format_duration(cpu_cost)} per page, margin "
               f"{cpu_margin:g})")
    out.append(f"SCHED_DEADLINE:  runtime {cpu.runtime_ns} ns, deadline "
               f"{cpu.deadline_ns} ns, period {cpu.period_ns} ns")
    out.append(f"cgroup cpu.max:  quota {cpu.quota_us} us, period "
               f"{cpu.cgroup_period_us} us")
    out.append("")
    pred = pl.prediction
    if pred is None:
        out.append("Prediction: none (the request fails before any "
                   "prediction)")
    else:
        rate = units.format_rate(pred.settings.bandwidth)
        out.append(f"Prediction at {rate}, downtime-limit "
                   f"{units.format_duration(pred.settings.downtime_limit)} "
                   f"(model {pred.model}):")
        out.extend(prediction_lines(pred))
    return out


def cmd_simulate(args, defaults):
    from tqdm import tqdm

    from rtmig_nova import model as rtmodel
    bw, limit = _bandwidth_and_limit(args)
    runs = units.parse_int(args.runs, "--runs", minimum=1) \
        if args.runs is not None else DEFAULT_RUNS
    seed = units.parse_int(args.seed, "--seed", minimum=0) \
        if args.seed is not None else None
    settings = _settings(args, defaults)
    ref, profile = _profile(args, defaults)
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
        doc["profile"] = _profile_info(ref, profile)
        print_json(doc)
        return EXIT_OK
    out = []
    _header(ref, profile, out)
    out.append("Settings: " + settings_line(pred.settings, pred.model))
    out.append(f"Simulated {runs} migrations"
               f"{'' if seed is None else f' (seed {seed})'} in "
               f"{units.format_duration(elapsed)}")
    out.append("")
    out.extend(prediction_lines(pred))
    _emit(out)
    return EXIT_OK


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def decade_histogram(profile):
    """Rows ``(lo, hi, pages)``: idle pages (0, 0, n) first, then one row
    per decade [10**k, 10**(k+1)) writes/s that holds pages."""
    import numpy as np
    rows = [(0.0, 0.0, profile.idle_pages)]
    if profile.rates.size:
        # The bins hold means of nearby rates; a tiny nudge keeps exact
        # powers of ten in their own decade despite log10 rounding.
        k = np.floor(np.log10(profile.rates) + 1e-12).astype(np.int64)
        for d in range(int(k.min()), int(k.max()) + 1):
            n = int(profile.counts[k == d].sum())
            if n:
                rows.append((10.0 ** d, 10.0 ** (d + 1), n))
    return rows


def profile_summary(ref, profile):
    """The ``profile show --json`` document (see docs/cli.md)."""
    total = profile.total_pages
    return {
        "profile": ref,
        "memory_bytes": profile.memory_bytes,
        "page_size_bytes": profile.page_size,
        "pages": {"total": total, "active": profile.active_pages,
                  "idle": profile.idle_pages, "zero": profile.zero_pages},
        "rate_bins": int(profile.rates.size),
        "write_rate_per_s": profile.write_rate,
        "dirty_rate": [{"window_s": w,
                        "bytes_per_s": profile.dirty_rate(w)}
                       for w in DIRTY_RATE_WINDOWS],
        "decades": [{"rate_min_per_s": lo, "rate_max_per_s": hi,
                     "pages": n, "memory_share": n / total}
                    for lo, hi, n in decade_histogram(profile)],
        **profile_flags(profile),
        "metadata": profile.metadata,
    }


def _decade_label(lo, hi):
    if hi == 0:
        return "0 (idle)"
    return f"[{_pow10(lo)}, {_pow10(hi)})"


def _pow10(x):
    k = round(math.log10(x))
    return f"1e{k:+d}" if not 0 <= k <= 3 else f"{10 ** k:d}"


def cmd_profile_show(args, defaults):
    ref, profile = _profile(args, defaults)
    doc = profile_summary(ref, profile)
    if args.json:
        print_json(doc)
        return EXIT_OK
    total = doc["pages"]["total"]

    def pct(n):
        return f"{100.0 * n / total:.2f} %"

    out = [f"Profile:     {ref}"]
    out.extend(profile_notes(profile))
    out.append(f"Memory:      {units.format_bytes(profile.memory_bytes)} "
               f"({profile.memory_bytes} bytes)")
    out.append(f"Page size:   {profile.page_size} bytes")
    out.append(f"Pages:       {total} total, {profile.active_pages} active "
               f"({pct(profile.active_pages)}), {profile.idle_pages} idle "
               f"({pct(profile.idle_pages)}), {profile.zero_pages} zero "
               f"({pct(profile.zero_pages)})")
    out.append(f"Rate bins:   {doc['rate_bins']}")
    out.append(f"Write rate:  {units.format_number(profile.write_rate)} "
               f"writes/s (all pages)")
    for i, d in enumerate(doc["dirty_rate"]):
        label = "Dirty rate:  " if i == 0 else "             "
        out.append(f"{label}{units.format_rate(d['bytes_per_s'])} "
                   f"({d['bytes_per_s']:.0f} bytes/s) over "
                   f"{d['window_s']:g} s windows")
    out.append("")
    out.append("Pages by write rate (writes/s per page):")
    rows = [[_decade_label(r["rate_min_per_s"], r["rate_max_per_s"]),
             str(r["pages"]), f"{100.0 * r['memory_share']:.2f} %"]
            for r in doc["decades"]]
    out.extend(_table(["writes/s", "pages", "memory"], rows))
    out.append("")
    out.append("Metadata:")
    if not profile.metadata:
        out.append("  (none)")
    for key in sorted(profile.metadata):
        value = profile.metadata[key]
        text = value if isinstance(value, str) else \
            json.dumps(jsonable(value), sort_keys=True)
        out.append(f"  {key}: {text}")
    _emit(out)
    return EXIT_OK


# -- profile convert ----------------------------------------------------------

_CSV_HEADER = ["rate_per_s", "pages"]


def _kind(path, what):
    low = path.lower()
    for ext, kind in ((".json.gz", "json"), (".json", "json"),
                      (".npy", "npy"), (".csv", "csv")):
        if low.endswith(ext):
            if what == "OUTPUT" and kind == "npy":
                break
            return kind
    forms = ".npy, .csv, .json or .json.gz" if what == "INPUT" else \
        ".json, .json.gz or .csv"
    raise CliError(f"{what}: {path}: unknown file type; expected {forms}")


def read_npy(path):
    import numpy as np
    try:
        arr = np.load(path, allow_pickle=False)
    except OSError:
        raise
    except (ValueError, EOFError) as e:
        raise CliError(f"{path}: not a .npy array of per-page rates "
                       f"({str(e).splitlines()[0] if str(e) else 'corrupt'})"
                       ) from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 1 or \
            arr.dtype.kind not in "fiu":
        raise CliError(f"{path}: expected a one-dimensional numeric array "
                       f"of per-page rates (writes/s), got "
                       f"{getattr(arr, 'dtype', type(arr))} with shape "
                       f"{getattr(arr, 'shape', '?')}")
    return arr


def read_histogram_csv(path):
    """``(rates, pages, idle_pages)`` from a ``rate_per_s,pages`` CSV."""
    rates, pages, idle = [], [], 0
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header] != _CSV_HEADER:
                raise CliError(f"{path}: not a histogram CSV: the first "
                               f"line must be '{','.join(_CSV_HEADER)}'")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row) \
                        or row[0].lstrip().startswith("#"):
                    continue
                if len(row) != 2:
                    raise CliError(f"{path}:{line}: expected 2 columns "
                                   f"(rate_per_s,pages), got {len(row)}")
                try:
                    rate = float(row[0])
                    n = int(row[1].strip(), 10)
                except ValueError:
                    raise CliError(f"{path}:{line}: expected a rate "
                                   f"(writes/s) and a whole number of "
                                   f"pages, got {','.join(row)!r}") from None
                if not (math.isfinite(rate) and rate >= 0) or n < 0:
                    raise CliError(f"{path}:{line}: rate must be finite and "
                                   f">= 0 writes/s and pages >= 0, got "
                                   f"{','.join(row)!r}")
                if rate == 0:
                    idle += n
                else:
                    rates.append(rate)
                    pages.append(n)
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a histogram CSV (not UTF-8 text)") \
            from None
    except csv.Error as e:
        raise CliError(f"{path}: not a histogram CSV ({e})") from None
    return rates, pages, idle


def write_histogram_csv(profile, f):
    w = csv.writer(f, lineterminator="\n")
    w.writerow(_CSV_HEADER)
    w.writerow([0, profile.idle_pages])
    for r, n in zip(profile.rates, profile.counts):
        w.writerow([repr(float(r)), int(n)])


@contextlib.contextmanager
def _replacing(path, suffix):
    """A temporary path next to ``path``, renamed over it on success."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rtmig-", suffix=suffix,
                               dir=directory)
    os.close(fd)
    # mkstemp makes the file 0600; give it the mode open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def cmd_profile_convert(args, defaults):
    import numpy as np

    from rtmig_nova.model import DirtyProfile
    src, dst = args.input, args.output
    in_kind = _kind(src, "INPUT")
    out_kind = _kind(dst, "OUTPUT")
    page_size = None
    if args.page_size is not None:
        page_size = units.parse_size(args.page_size, "--page-size")
        if page_size <= 0:
            raise CliError(f"--page-size: must be > 0 bytes, got "
                           f"{args.page_size!r}")
    zero = units.parse_int(args.zero_pages, "--zero-pages", minimum=0) \
        if args.zero_pages is not None else None
    if os.path.lexists(dst) and not args.force:
        raise CliError(f"OUTPUT: {dst} exists; use --force to overwrite it")
    if os.path.isdir(dst):
        raise CliError(f"OUTPUT: {dst} is a directory")
    meta = {"converted_from": os.path.basename(src)}
    if in_kind == "npy":
        arr = read_npy(src)
        profile = DirtyProfile.from_rates(
            np.asarray(arr, dtype=np.float64), page_size=page_size or 4096,
            zero_pages=zero or 0, metadata=meta)
    elif in_kind == "csv":
        rates, pages, idle = read_histogram_csv(src)
        profile = DirtyProfile.from_histogram(
            rates, np.asarray(pages, dtype=np.int64), idle_pages=idle,
            zero_pages=zero or 0, page_size=page_size or 4096,
            metadata=meta)
    else:
        profile = DirtyProfile.load(src)
        if page_size is not None or zero is not None:
            profile = DirtyProfile(
                profile.rates, profile.counts, profile.idle_pages,
                profile.zero_pages if zero is None else zero,
                profile.page_size if page_size is None else page_size,
                profile.metadata)
    suffix = ".json.gz" if dst.lower().endswith(".gz") else \
        os.path.splitext(dst)[1]
    with _replacing(dst, suffix) as tmp:
        if out_kind == "json":
            profile.save(tmp)
        else:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                write_histogram_csv(profile, f)
    out = [f"wrote {dst}: {units.format_bytes(profile.memory_bytes)}, "
           f"{profile.total_pages} pages ({profile.active_pages} active, "
           f"{profile.idle_pages} idle), {profile.rates.size} rate bins"]
    if out_kind == "csv" and (profile.zero_pages or profile.page_size != 4096
                              or profile.metadata):
        out.append(f"note: a CSV histogram keeps rates and page counts "
                   f"only; page size ({profile.page_size} bytes), zero pages "
                   f"({profile.zero_pages}) and metadata are not stored")
    _emit(out)
    return EXIT_OK


# -- main ---------------------------------------------------------------------

def _one_line(text):
    return " ".join(str(text).split()) or "unknown error"


def _os_error_message(e):
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def _fail(message, status=EXIT_USAGE):
    sys.stderr.write(f"{PROG}: error: {_one_line(message)}\n")
    return status


def main(argv=None):
    """Run ``rtmig`` with ``argv`` (default: sys.argv[1:]); returns the
    exit status."""
    debug = False
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = getattr(args, "debug", False)
        defaults = load_defaults(getattr(args, "config_file", None))
        status = args.func(args, defaults)
        sys.stdout.flush()
        return status
    except SystemExit as e:      # --help, --version
        return e.code if isinstance(e.code, int) else EXIT_OK
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (rtmig ... | head): not an error of ours.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    except CliError as e:
        return _fail(e)
    except OSError as e:
        return _fail(_os_error_message(e))
    except ValueError as e:      # ProfileError, model argument checks
        return _fail(e)
    except Exception as e:       # a bug: still one line unless --debug
        if debug:
            raise
        return _fail(f"internal error: {type(e).__name__}: {e} (run with "
                     f"--debug for a traceback)", EXIT_INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
