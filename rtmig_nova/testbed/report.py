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

"""Results of the validation experiment: CSV, error summary, plots, report.

Works on the flat rows of :meth:`RunResult.flat
<rtmig_nova.testbed.validation.RunResult.flat>` (or the same columns read
back from the CSV), so a report can be regenerated from a CSV alone.

Errors compare each model's *median* prediction with the one measured
value of a run: relative error |pred - meas| / meas for total time, and for
downtime also the absolute error (the target is 20% *or* 5 ms).  A run the
model predicts as not converging (median infinite) while it converged
counts as an error of 100%.
"""

import csv
import math
import os
import statistics

MODELS = ("precopy", "geometric", "qemu-estimate")
LABELS = {"precopy": "rtmig precopy (per-page)",
          "geometric": "geometric (average rate)",
          "qemu-estimate": "QEMU's estimate"}
TARGETS = {"total_time_rel": 0.05, "downtime_rel": 0.20,
           "downtime_abs_s": 0.005, "coverage": (0.80, 0.98),
           "confident": 0.1}
# Bins of the predicted P(finished before the abort) in the reliability
# plot and table.
RELIABILITY_EDGES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


def write_csv(rows, path):
    """Write the flat rows to ``path`` (columns of the first row)."""
    rows = list(rows)
    if not rows:
        raise ValueError("no results to write")
    tmp = path + ".part"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    os.replace(tmp, path)


def _num(value):
    if value in (None, ""):
        return None
    if isinstance(value, str):
        if value in ("True", "False"):
            return value == "True"
        try:
            return float(value)
        except ValueError:
            return value
    return value


def read_csv(path):
    """Rows of a CSV written by :func:`write_csv`, numbers as floats."""
    with open(path, newline="") as f:
        return [{k: _num(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


def _tag(model):
    return model.replace("-", "_")


def _ok(row):
    # A migration whose guest lost writes measured a broken QEMU, not the
    # pre-copy the models describe: marked, kept in the CSV, not scored.
    return not row.get("error") and not row.get("timed_out") and \
        not row.get("measured_integrity_error") and \
        row.get("measured_total_time_s") is not None


def errors(rows, model, stat="p50"):
    """Per-run errors of ``model`` over the runs that completed:
    a list of dicts with ``workload``, ``bandwidth``, ``total_time_rel``,
    ``downtime_rel``, ``downtime_abs_s``, ``downtime_ok`` (within 20% or
    5 ms), ``total_in_p5_p95`` (measured inside the predicted 90%
    interval) and ``bytes_rel`` (of the bytes sent; None where a row has
    no byte counts).  Bytes tell a wrong volume from a wrong pace."""
    out = []
    tag = _tag(model)
    for row in rows:
        if not _ok(row):
            continue
        mt, md = row["measured_total_time_s"], row["measured_downtime_s"]
        pt = row.get(f"{tag}_total_time_s_{stat}")
        pd = row.get(f"{tag}_downtime_s_{stat}")
        t_rel = 1.0 if pt is None else abs(pt - mt) / mt
        d_abs = None if pd is None or md is None else abs(pd - md)
        d_rel = 1.0 if d_abs is None else (d_abs / md if md > 0 else
                                           (0.0 if d_abs == 0 else 1.0))
        lo = row.get(f"{tag}_total_time_s_p5")
        hi = row.get(f"{tag}_total_time_s_p95")
        mb = row.get("measured_transferred_bytes")
        pb = row.get(f"{tag}_bytes_sent_{stat}")
        out.append({
            "bytes_rel": abs(pb - mb) / mb if mb and pb is not None
            else None,
            "workload": row["workload"],
            "bandwidth": row["bandwidth_bytes_per_s"],
            "total_time_rel": t_rel, "downtime_rel": d_rel,
            "downtime_abs_s": d_abs,
            "downtime_ok": d_abs is not None and (
                d_rel <= TARGETS["downtime_rel"]
                or d_abs <= TARGETS["downtime_abs_s"]),
            "total_in_p5_p95": (lo is not None and hi is not None
                                and lo <= mt <= hi)})
    return out


def convergence(rows, model):
    """(agreements, runs): over the runs without an error, how often the
    model's P(finished before the abort) >= 1/2 matched whether the real
    migration finished before it (a run that timed out did not)."""
    tag = _tag(model)
    agree = n = 0
    for row in rows:
        p = row.get(f"{tag}_p_within_timeout")
        if row.get("error") or p is None:
            continue
        n += 1
        agree += (p >= 0.5) == (not row.get("timed_out"))
    return agree, n


def cases(rows, model):
    """Per (workload, bandwidth): the repetitions without an error, how
    many finished before the abort, the mean predicted probability of
    that, and whether the prediction was confidently wrong (P < 0.1 where
    most repetitions finished, > 0.9 where most did not)."""
    tag = _tag(model)
    groups = {}
    for row in rows:
        p = row.get(f"{tag}_p_within_timeout")
        if row.get("error") or row.get("measured_integrity_error") or \
                p is None:
            continue
        key = (row["workload"], row["bandwidth_bytes_per_s"])
        groups.setdefault(key, []).append((p, not row.get("timed_out")))
    out = []
    for (workload, bw), runs in groups.items():
        done = sum(f for _, f in runs)
        p_mean = statistics.fmean(p for p, _ in runs)
        most = done > len(runs) / 2
        wrong = (p_mean < TARGETS["confident"] and most) or \
            (p_mean > 1 - TARGETS["confident"] and done < len(runs) / 2)
        out.append({"workload": workload, "bandwidth": bw,
                    "repetitions": len(runs), "finished": done,
                    "p_finish_mean": p_mean, "confident_wrong": wrong})
    return out


def reliability(rows, model, edges=RELIABILITY_EDGES):
    """The runs binned by the predicted P(finished before the abort):
    per bin (lo, hi, runs, mean predicted, observed share finished)."""
    tag = _tag(model)
    pairs = [(row[f"{tag}_p_within_timeout"], not row.get("timed_out"))
             for row in rows if not row.get("error")
             and not row.get("measured_integrity_error")
             and row.get(f"{tag}_p_within_timeout") is not None]
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        inside = [(p, f) for p, f in pairs
                  if lo <= p < hi or (last and p == hi)]
        if inside:
            out.append((lo, hi, len(inside),
                        statistics.fmean(p for p, _ in inside),
                        sum(f for _, f in inside) / len(inside)))
    return out


def summarise(rows):
    """{model: {...}} medians of the errors (see :func:`errors`), the share
    of runs whose downtime is within target and whose total time lies in
    the predicted 5-95% interval, and the run counts."""
    out = {}
    for model in MODELS:
        errs = errors(rows, model)
        agree, n = convergence(rows, model)
        if not errs:
            out[model] = {"runs": 0, "convergence_agreement":
                          agree / n if n else None}
            continue
        d_abs = [e["downtime_abs_s"] for e in errs
                 if e["downtime_abs_s"] is not None]
        out[model] = {
            "runs": len(errs),
            "total_time_median_rel_error": statistics.median(
                e["total_time_rel"] for e in errs),
            "downtime_median_rel_error": statistics.median(
                e["downtime_rel"] for e in errs),
            "downtime_median_abs_error_s": (statistics.median(d_abs)
                                            if d_abs else None),
            "downtime_within_target": sum(e["downtime_ok"] for e in errs)
            / len(errs),
            "total_time_in_p5_p95": sum(e["total_in_p5_p95"] for e in errs)
            / len(errs),
            "convergence_agreement": agree / n if n else None,
            "confident_wrong": sum(c["confident_wrong"]
                                   for c in cases(rows, model)),
            "workloads": _per_workload(errs)}
    cpu = [r["measured_cpu_per_page_s"] for r in rows if _ok(r)
           and r.get("measured_cpu_per_page_s")]
    out["cpu_per_page_median_s"] = statistics.median(cpu) if cpu else None
    out["runs"] = len(rows)
    out["failed"] = sum(1 for r in rows if r.get("error"))
    out["timed_out"] = sum(1 for r in rows if r.get("timed_out"))
    out["integrity_failed"] = sum(1 for r in rows
                                  if r.get("measured_integrity_error"))
    out["integrity_checked"] = sum(
        1 for r in rows if r.get("measured_guest_lost") is not None
        or r.get("measured_integrity_error"))
    return out


def _per_workload(errs):
    out = {}
    for name in dict.fromkeys(e["workload"] for e in errs):
        mine = [e for e in errs if e["workload"] == name]
        out[name] = {
            "runs": len(mine),
            "total_time_median_rel_error": statistics.median(
                e["total_time_rel"] for e in mine),
            "total_time_in_p5_p95": sum(e["total_in_p5_p95"]
                                        for e in mine) / len(mine),
            "bytes_median_rel_error": _median_known(
                e["bytes_rel"] for e in mine),
            "downtime_within_target": sum(e["downtime_ok"] for e in mine)
            / len(mine)}
    return out


def _median_known(values):
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def verdict(summary):
    """{target: bool} of the issue's targets on a :func:`summarise`."""
    ours, base = summary["precopy"], summary["geometric"]
    if not ours.get("runs"):
        return {}
    d_med = ours["downtime_median_rel_error"]
    d_abs = ours["downtime_median_abs_error_s"]
    lo, hi = TARGETS["coverage"]
    workloads = ours.get("workloads") or {}
    return {
        "total time median error <= 5%, every workload":
            all(w["total_time_median_rel_error"] <= TARGETS["total_time_rel"]
                for w in workloads.values()),
        "measured total in the predicted 5-95% in 80-98% of runs":
            lo <= ours["total_time_in_p5_p95"] <= hi,
        "no confident wrong verdict on convergence":
            ours.get("confident_wrong", 0) == 0,
        "downtime median error <= 20% or 5 ms":
            d_med <= TARGETS["downtime_rel"] or (
                d_abs is not None and d_abs <= TARGETS["downtime_abs_s"]),
        "total time error <= half the average-rate baseline's":
            base.get("runs", 0) > 0 and
            ours["total_time_median_rel_error"]
            <= 0.5 * base["total_time_median_rel_error"],
    }


def plot(rows, path):
    """Predicted (median) vs measured total time and downtime, one marker
    per model and run, log-log with the y = x line; a PNG at ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    markers = {"precopy": "o", "geometric": "s", "qemu-estimate": "^"}
    done = [r for r in rows if _ok(r)]
    for ax, metric, title in ((axes[0], "total_time_s", "total time (s)"),
                              (axes[1], "downtime_s", "downtime (s)")):
        meas_all = []
        for model in MODELS:
            tag = _tag(model)
            xs, ys = [], []
            for r in done:
                m = r.get(f"measured_{metric}")
                p = r.get(f"{tag}_{metric}_p50")
                if m and p and m > 0 and p > 0 and math.isfinite(p):
                    xs.append(m)
                    ys.append(p)
            meas_all += xs + ys
            ax.scatter(xs, ys, marker=markers[model], label=LABELS[model],
                       alpha=0.7)
        if meas_all:
            lo, hi = min(meas_all) / 1.5, max(meas_all) * 1.5
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_xscale("log")
            ax.set_yscale("log")
        else:
            # No run finished (all timed out near the cliff, say): nothing
            # to put on a log axis, which matplotlib refuses empty.
            ax.text(0.5, 0.5, "no migration finished", ha="center",
                    va="center", transform=ax.transAxes)
        ax.set_xlabel("measured " + title)
        ax.set_ylabel("predicted " + title + ", median")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Predicted vs measured live migrations (testbed, TCG)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(rows, path, model="precopy"):
    """Reliability diagram of the predicted P(finished before the abort):
    per bin, the observed share of runs that finished against the mean
    prediction (marker area ~ runs), with the diagonal; a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5))
    bins = reliability(rows, model)
    if bins:
        ax.scatter([b[3] for b in bins], [b[4] for b in bins],
                   s=[20 + 8 * b[2] for b in bins], alpha=0.7,
                   label=LABELS[model])
        for b in bins:
            ax.annotate(f"{b[2]}", (b[3], b[4]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("predicted P(finished before the abort)")
    ax.set_ylabel("observed share finished")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Reliability of P(converge), runs per bin")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x):
    return "-" if x is None else f"{1000 * x:.1f} ms"


def _qemu(row):
    v = row.get("profile_qemu_version")
    return "-" if v is None else str(v)


def markdown(rows, summary, meta, csv_name, png_name):
    """The report as markdown text."""
    by = meta.get("generated by", "rtmig experiment validate")
    lines = ["# Validation against real live migrations", "",
             f"Generated by `{by}` "
             f"({meta.get('date', '')}); raw data: [{csv_name}]({csv_name}).",
             "",
             "Each run boots a fresh testbed guest on host A, captures its "
             "dirty profile with a probe migration (`rtmig profile capture`),"
             " predicts the migration with each model, then live-migrates it "
             "to host B for real (libvirt peer-to-peer, QEMU "
             f"{meta.get('qemu', '?')}, TCG) at the run's bandwidth and "
             "downtime limit and compares with what QEMU measured.", "",
             "## Setup", ""]
    for key, value in meta.items():
        lines.append(f"- {key}: {value}")
    lines += ["", "## Errors (median over the completed runs)", "",
              "| model | runs | total time | downtime (rel.) | downtime "
              "(abs.) | downtime within 20% or 5 ms | measured total in "
              "predicted 5-95% | finished before the abort, as predicted |",
              "|---|---|---|---|---|---|---|---|"]
    for model in MODELS:
        s = summary[model]
        if not s.get("runs"):
            lines.append(f"| {LABELS[model]} | 0 | - | - | - | - | - | "
                         f"{_pct(s.get('convergence_agreement'))} |")
            continue
        lines.append(
            f"| {LABELS[model]} | {s['runs']} | "
            f"{_pct(s['total_time_median_rel_error'])} | "
            f"{_pct(s['downtime_median_rel_error'])} | "
            f"{_ms(s['downtime_median_abs_error_s'])} | "
            f"{_pct(s['downtime_within_target'])} | "
            f"{_pct(s['total_time_in_p5_p95'])} | "
            f"{_pct(s['convergence_agreement'])} |")
    cpu = summary.get("cpu_per_page_median_s")
    lines += ["", f"Runs: {summary['runs']}, failed: {summary['failed']}, "
              f"timed out: {summary['timed_out']}.  Guest integrity check "
              f"on host B: {summary.get('integrity_checked', 0)} migrations "
              f"checked, {summary.get('integrity_failed', 0)} lost writes "
              f"or failed (not scored).  CPU time of QEMU's "
              f"migration thread per page sent (median): "
              f"{'-' if not cpu else f'{cpu * 1e6:.2f} us'}.", "",
              "Targets:", ""]
    for target, ok in verdict(summary).items():
        lines.append(f"- {target}: **{'met' if ok else 'missed'}**")
    ours = summary["precopy"]
    if ours.get("runs"):
        lines += ["", "## Every workload (precopy model)", "",
                  "| workload | runs | total time median error | bytes "
                  "sent median error | measured "
                  "total in predicted 5-95% | downtime within 20% or "
                  "5 ms |", "|---|---|---|---|---|---|"]
        for name, w in ours["workloads"].items():
            b = w["bytes_median_rel_error"]
            lines.append(f"| {name} | {w['runs']} | "
                         f"{_pct(w['total_time_median_rel_error'])} | "
                         f"{_pct(b)} | "
                         f"{_pct(w['total_time_in_p5_p95'])} | "
                         f"{_pct(w['downtime_within_target'])} |")
    lines += ["", "## Convergence (precopy model)", "",
              "| workload | MiB/s | repetitions | finished before the abort "
              "| predicted P(finished), mean | confidently wrong |",
              "|---|---|---|---|---|---|"]
    for c in cases(rows, "precopy"):
        lines.append(f"| {c['workload']} | {c['bandwidth'] / 2 ** 20:.0f} "
                     f"| {c['repetitions']} | {c['finished']} | "
                     f"{c['p_finish_mean']:.2f} | "
                     f"{'yes' if c['confident_wrong'] else 'no'} |")
    rel = reliability(rows, "precopy")
    if rel:
        lines += ["", "Reliability (runs binned by the predicted "
                  "probability):", "",
                  "| predicted | runs | mean predicted | observed |",
                  "|---|---|---|---|"]
        for lo, hi, n, p, f in rel:
            lines.append(f"| {lo:.1f}-{hi:.1f} | {n} | {p:.2f} | "
                         f"{f:.2f} |")
    lines += ["", f"![predicted vs measured]({png_name})", "",
              f"![reliability of P(converge)]({png_name[:-4]}"
              f"-reliability.png)", "",
              "## Runs", "",
              "| workload | rep | MiB/s | QEMU | measured total | precopy "
              "p50 [p5, p95] | geometric | QEMU est. | measured downtime | "
              "precopy p50 | iterations | CPU/page |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bw = r["bandwidth_bytes_per_s"] / 2 ** 20
        if not _ok(r):
            why = r.get("error") or r.get("measured_integrity_error") or (
                f"timed out after {r.get('timeout_s') or 0:.0f} s (precopy: "
                f"P(done by then) = "
                f"{r.get('precopy_p_within_timeout') or 0:.2f})")
            lines.append(f"| {r['workload']} | {int(r['repetition'])} | "
                         f"{bw:.0f} | {_qemu(r)} | {why} | | | | | | | |")
            continue

        def s(x):
            return "inf" if x is None else f"{x:.2f} s"
        cpu = r.get("measured_cpu_per_page_s")
        lines.append(
            f"| {r['workload']} | {int(r['repetition'])} | {bw:.0f} | "
            f"{_qemu(r)} | {s(r['measured_total_time_s'])} | "
            f"{s(r.get('precopy_total_time_s_p50'))} "
            f"[{s(r.get('precopy_total_time_s_p5'))}, "
            f"{s(r.get('precopy_total_time_s_p95'))}] | "
            f"{s(r.get('geometric_total_time_s_p50'))} | "
            f"{s(r.get('qemu_estimate_total_time_s_p50'))} | "
            f"{_ms(r['measured_downtime_s'])} | "
            f"{_ms(r.get('precopy_downtime_s_p50'))} | "
            f"{int(r['measured_iterations'] or 0)} | "
            f"{'-' if not cpu else f'{cpu * 1e6:.2f} us'} |")
    return "\n".join(lines) + "\n"


def write_report(rows, outdir, meta, stem="validation"):
    """CSV, PNGs and markdown into ``outdir``; returns the (csv, png, md,
    reliability png) paths and the summary."""
    os.makedirs(outdir, exist_ok=True)
    csv_path = os.path.join(outdir, stem + ".csv")
    png_path = os.path.join(outdir, stem + ".png")
    md_path = os.path.join(outdir, stem + ".md")
    write_csv(rows, csv_path)
    rows = read_csv(csv_path)
    summary = summarise(rows)
    plot(rows, png_path)
    rel_path = os.path.join(outdir, stem + "-reliability.png")
    plot_reliability(rows, rel_path)
    text = markdown(rows, summary, meta, os.path.basename(csv_path),
                    os.path.basename(png_path))
    with open(md_path + ".part", "w") as f:
        f.write(text)
    os.replace(md_path + ".part", md_path)
    return (csv_path, png_path, md_path, rel_path), summary
