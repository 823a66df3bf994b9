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

"""What the commands report: the text of their tables and the extra parts
of their JSON documents (see docs/cli.md)."""

import json
import math
import time

from rtmig_nova import units
from rtmig_nova.cli.output import jsonable, table

QUANTILES = (0.5, 0.95, 0.99)
# Windows of the aggregate dirty rates that `profile show` reports, seconds.
DIRTY_RATE_WINDOWS = (0.1, 1.0)

SYNTHETIC_NOTE = "SYNTHETIC profile (not captured from a guest)"
COARSE_NOTE = "COARSE profile (aggregate dirty rate only)"
NOT_CONVERGED = "not converged"


# -- the profile --------------------------------------------------------------

def _is_true(value):
    return value is True or (isinstance(value, str)
                             and value.strip().lower() in ("true", "yes",
                                                           "1"))


def profile_flags(profile):
    """``{"synthetic": bool, "coarse": bool}`` of ``profile``."""
    meta = profile.metadata
    return {"synthetic": _is_true(meta.get("synthetic")),
            "coarse": profile.coarse}


def profile_notes(profile):
    """The SYNTHETIC and COARSE warnings that apply to ``profile``."""
    flags = profile_flags(profile)
    notes = []
    if flags["synthetic"]:
        notes.append(SYNTHETIC_NOTE)
    if flags["coarse"]:
        notes.append(COARSE_NOTE)
    return notes


def profile_info(ref, profile):
    """The ``profile`` object of the predict, plan and simulate JSON."""
    return {"name": ref, "memory_bytes": profile.memory_bytes,
            "page_size_bytes": profile.page_size, **profile_flags(profile)}


def profile_line(ref, profile):
    """``Profile: REF (size, pages)``."""
    return (f"Profile: {ref} ({units.format_bytes(profile.memory_bytes)}, "
            f"{profile.total_pages} pages of {profile.page_size} bytes)")


def header_lines(ref, profile):
    """The profile line and its notes that start the predict, plan and
    simulate tables."""
    out = [profile_line(ref, profile)]
    for note in profile_notes(profile):
        out.append(f"  {note}")
    return out


# -- predict, simulate --------------------------------------------------------

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
    lines = table(header, rows)
    p = pred.converges
    lines.append(f"  P(converge within {pred.settings.max_rounds} rounds): "
                 f"{units.format_probability(p)}")
    if any_inf:
        lines.append(f"  '{NOT_CONVERGED}': infinite, the migration does not "
                     f"converge with probability "
                     f"{units.format_probability(1.0 - p)}")
    return lines


def settings_line(st, model):
    """The migration settings of a prediction, on one line."""
    return (f"model {model}, QEMU {st.qemu_version}, bandwidth "
            f"{units.format_rate(st.bandwidth)} "
            f"({st.bandwidth:.0f} bytes/s), downtime-limit "
            f"{units.format_duration(st.downtime_limit)}, dirty log "
            f"{st.dirty_log}, order {st.order}, check interval "
            f"{units.format_duration(st.check_interval)}, switch-over "
            f"{units.format_duration(st.switchover_time)}, "
            + (f"send backlog {units.format_bytes(st.send_backlog)}, "
               if st.send_backlog else "") + "setup "
            f"{units.format_duration(st.setup_time)}"
            + (f" +- {units.format_duration(st.setup_time_sd)}"
               if st.setup_time_sd else "") + ", "
            + (f"send rate +- {100 * st.send_rate_sd:.3g}%, "
               if st.send_rate_sd else "")
            + (f"write intensity +- {100 * st.write_scale_sd:.3g}%, "
               if st.write_scale_sd else "")
            + (f"stop-and-copy at {units.format_rate(st.link_rate)}, "
               if st.link_rate is not None else "")
            + f"max {st.max_rounds} rounds")


# -- plan ---------------------------------------------------------------------

def ordering_lines(rows, effect, bandwidth, limit, deadline, max_downtime,
                   confidence, link):
    """The table of ``rtmig compare-orders``: one row per profile, dirty
    log and order, then the cold-first order's effect."""
    def size(x):
        return units.format_bytes(x) if math.isfinite(x) else "-"

    def dur(x):
        return units.format_duration(x) if math.isfinite(x) else "-"

    out = [f"Predictions at {units.format_rate(bandwidth)}, downtime-limit "
           f"{units.format_duration(limit)}; least bandwidth for "
           f"{units.format_duration(deadline)} and "
           f"{units.format_duration(max_downtime)} at confidence "
           f"{confidence:g} over {units.format_rate(link)}; medians "
           f"('-': does not converge)", ""]
    out += table(
        ["profile", "dirty log", "order", "P(converge)", "total", "downtime",
         "sent", "least bandwidth"],
        [[r.workload, r.dirty_log, r.order, f"{r.converges:.3f}",
          dur(r.total_s), dur(r.downtime_s), size(r.sent_bytes),
          "infeasible" if r.least_bandwidth is None
          else units.format_rate(r.least_bandwidth)] for r in rows])
    out += ["", "Cold-first against address order (rate / address; below "
                "1: cold-first helps):", ""]

    def ratio(x):
        return "-" if x is None else f"{x:.3f}"

    out += table(
        ["profile", "dirty log", "total", "downtime", "sent",
         "least bandwidth"],
        [[w, log, ratio(e["total_s"]), ratio(e["downtime_s"]),
          ratio(e["sent_bytes"]), ratio(e["least_bandwidth"])]
         for (w, log), e in effect.items()])
    return out


def plan_lines(ref, profile, pl, cpu_cost, cpu_margin, predictor):
    """The ``plan`` table."""
    out = header_lines(ref, profile)
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


# -- profile show -------------------------------------------------------------

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


def profile_show_lines(ref, profile, doc):
    """The ``profile show`` table; ``doc`` is :func:`profile_summary`."""
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
    out.extend(table(["writes/s", "pages", "memory"], rows))
    out.append("")
    out.append("Metadata:")
    if not profile.metadata:
        out.append("  (none)")
    for key in sorted(profile.metadata):
        value = profile.metadata[key]
        text = value if isinstance(value, str) else \
            json.dumps(jsonable(value), sort_keys=True)
        out.append(f"  {key}: {text}")
    return out


# -- reserve ------------------------------------------------------------------

def _rate_text(rate):
    return f"{units.format_rate(rate)} ({rate:.0f} bytes/s)"


def _where(ifname, netns):
    return ifname if netns is None else f"{ifname} (netns {netns})"


def _apply_row(step, domain, uri):
    """``(kind, what it sets)`` of one applied step."""
    kind = step.kind
    if kind == "migration":
        return kind, (f"domain {domain} ({uri}): bandwidth "
                      f"{_rate_text(step.bandwidth)}, downtime-limit "
                      f"{units.format_duration(step.max_downtime)}")
    if kind == "cpu":
        parts = []
        for group in ("emulator", "vcpu", "iothread"):
            quota = step.params.get(f"{group}_quota")
            period = step.params.get(f"{group}_period")
            if quota is not None:
                parts.append(f"{group} quota {quota} us per {period} us")
        return kind, f"domain {domain}: " + ", ".join(parts)
    if kind == "deadline":
        return kind, (f"thread {step.tid}: runtime {step.runtime_ns} ns, "
                      f"deadline {step.deadline_ns} ns, period "
                      f"{step.period_ns} ns")
    if kind == "shaping":
        plan = step.plan
        match = plan.migration.match
        lo, hi = match.dst_ports
        peer = "any address" if match.peer is None else match.peer
        return kind, (f"{_where(plan.ifname, plan.netns)}: HTB, link "
                      f"{_rate_text(plan.link_rate)}; migration class "
                      f"{_rate_text(plan.migration.rate)} to ports "
                      f"{lo}-{hi} of {peer}")
    return kind, str(step)


def _rows(rows, indent="  "):
    width = max(len(k) for k, _ in rows)
    return [f"{indent}{k.ljust(width)}  {v}" for k, v in rows]


def reserve_apply_lines(ident, label, path, domain, uri, steps):
    """The ``reserve apply`` report: the id and what each step set."""
    out = [f"Reservation {ident} applied"]
    if label:
        out.append(f"Label:       {label}")
    out.append(f"State file:  {path}")
    out.append("")
    out.extend(_rows([("step", "set")]
                     + [_apply_row(s, domain, uri) for s in steps]))
    out.append("")
    out.append(f"Release it with: rtmig reserve release {ident}")
    return out


def _previous_policy(previous, policy_names):
    policy, _flags, nice, priority, runtime, deadline, period = previous
    name = policy_names.get(policy, f"policy {policy}")
    if name == "SCHED_DEADLINE":
        return (f"{name} (runtime {runtime} ns, deadline {deadline} ns, "
                f"period {period} ns)")
    if name in ("SCHED_FIFO", "SCHED_RR"):
        return f"{name} (priority {priority})"
    return f"{name} (nice {nice})"


# libvirt's QEMU driver reports an unlimited migration speed as INT64_MAX
# bytes/s in MiB/s: 8796093022207 MiB/s.
_UNLIMITED_SPEED = (2 ** 63 - 1) // 2 ** 20 * 2 ** 20


def _speed_text(rate):
    if rate >= _UNLIMITED_SPEED:
        return f"unlimited ({rate:.0f} bytes/s, libvirt's default)"
    return _rate_text(rate)


def undo_text(kind, record, policy_names):
    """What releasing the step of ``kind`` restores, from its undo
    record."""
    try:
        if kind == "migration":
            return (f"domain {record['domain']} ({record['uri']}): "
                    f"bandwidth {_speed_text(record['bandwidth'])}, "
                    f"downtime-limit "
                    f"{units.format_duration(record['max_downtime'])}")
        if kind == "cpu":
            params = ", ".join(
                f"{k} {'none' if v == -1 else f'{v} us'}"
                for k, v in sorted(record["params"].items()))
            return (f"domain {record['domain']} ({record['uri']}): "
                    f"{params or 'nothing'}")
        if kind == "deadline":
            return (f"thread {record['tid']}: "
                    f"{_previous_policy(record['previous'], policy_names)}")
        if kind == "shaping":
            return (f"{_where(record['ifname'], record['netns'])}: the "
                    f"kernel's default qdisc (removes the rtmig HTB)")
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
        # A record of another shape (load checked only its kind): shown
        # as it is stored.
        pass
    return json.dumps(record, sort_keys=True)


def _created(created):
    if not isinstance(created, (int, float)):
        return "unknown"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %z",
                             time.localtime(created))
    except (OverflowError, OSError, ValueError):   # no time of this world
        return "unknown"


def reserve_show_lines(state_dir, docs, policy_names, refused=()):
    """The ``reserve show`` report; ``docs`` and ``refused`` as in its
    JSON."""
    out = []
    if not docs:
        out.append(f"No reservations recorded in {state_dir}")
    else:
        n = len(docs)
        out.append(f"{n} reservation{'s' if n != 1 else ''} recorded in "
                   f"{state_dir}")
    for doc in docs:
        out.append("")
        out.append(f"Reservation {doc['id']}")
        if doc["label"]:
            out.append(f"  Label:       {doc['label']}")
        out.append(f"  Created:     {_created(doc['created'])}")
        out.append(f"  State file:  {doc['state_file']}")
        if not doc["steps"]:
            out.append("  Steps:       none recorded (nothing was changed "
                       "yet)")
            continue
        out.append("  Steps, and what releasing restores (in reverse "
                   "order):")
        out.extend(_rows([(s["kind"], undo_text(s["kind"], s["record"],
                                                policy_names))
                          for s in doc["steps"]], indent="    "))
    if refused:
        n = len(refused)
        out.append("")
        out.append(f"{n} state file{'s' if n != 1 else ''} refused (not "
                   f"shown, not released; repair or remove by hand):")
        out.extend(f"  {r['state_file']}: {r['reason']}" for r in refused)
    return out


def reserve_release_lines(state_dir, ident, released, docs):
    """The ``reserve release`` report; ``docs`` maps the ids recorded
    before the release to their ``reserve show --json`` documents."""
    if not released:
        if ident is None:
            return [f"Nothing to release: no reservations recorded in "
                    f"{state_dir}"]
        return [f"Nothing to release: no reservation {ident} in "
                f"{state_dir} (unknown or already released)"]
    out = []
    for rid in released:
        doc = docs.get(rid)
        label = f" ({doc['label']})" if doc and doc["label"] else ""
        kinds = [s["kind"] for s in reversed(doc["steps"])] if doc else []
        out.append(f"Released {rid}{label}: restored "
                   f"{', '.join(kinds) or 'nothing'}")
    return out
