"""Page ordering: QEMU's address order against cold-first order.

Checconi, Cucinotta and Stein (VHPC 2009) propose sending each round's
pages in increasing order of write rate, hot pages last, so that a page is
sent as late as possible after its last write.  How much that buys depends
on the dirty log (:mod:`rtmig_nova.model.precopy`): under ``"sync"``
(TCG, KVM without manual protection) a page is dirty at the next sync if it
was written any time since the previous one, whenever it was sent, so the
order only decides which pages are still unsent when QEMU syncs early; under
``"clear"`` (KVM_CLEAR_DIRTY_LOG) a page's log is cleared when it is sent,
and a page sent last has the least time to be written again.

:func:`compare` puts a profile through the model under the four
combinations; :func:`least_bandwidths` adds the least bandwidth a deadline
needs under each.  Pure: profiles in, numbers out.
"""

import dataclasses
import math

from rtmig_nova.model import sizing
from rtmig_nova.model import variants
from rtmig_nova.model.precopy import DIRTY_LOGS, ORDERS

CASES = tuple((log, order) for log in DIRTY_LOGS for order in ORDERS)


@dataclasses.dataclass(frozen=True)
class OrderingRow:
    """One workload under one dirty log and send order.

    :ivar workload: the profile's name
    :ivar dirty_log: ``"sync"`` or ``"clear"``
    :ivar order: ``"address"`` or ``"rate"``
    :ivar bandwidth: the migration's bandwidth limit, bytes/s
    :ivar converges: P(the migration converges)
    :ivar total_s: median total time, s (inf: it does not converge)
    :ivar downtime_s: median downtime, s
    :ivar sent_bytes: median bytes sent
    :ivar least_bandwidth: least bandwidth (bytes/s) that meets the
        deadline and downtime bound of :func:`least_bandwidths`, or None
        (not asked, or no plan meets it)
    """
    workload: str
    dirty_log: str
    order: str
    bandwidth: float
    converges: float
    total_s: float
    downtime_s: float
    sent_bytes: float
    least_bandwidth: float = None


def compare(workload, profile, settings, model="precopy"):
    """The rows of ``profile`` (named ``workload``) under every
    (dirty log, order) of :data:`CASES`, the other
    :class:`MigrationSettings` fields from ``settings``, predicted by
    ``model`` (a model name or instance)."""
    predictor = variants.get(model)
    rows = []
    for log, order in CASES:
        st = dataclasses.replace(settings, dirty_log=log, order=order)
        pred = variants.run(predictor, profile, st)
        rows.append(OrderingRow(
            workload, log, order, st.bandwidth, float(pred.converges),
            _median(pred.total_time), _median(pred.downtime),
            _median(pred.bytes_sent)))
    return rows


def least_bandwidths(rows, profile, deadline, max_downtime, confidence,
                     link_capacity, **settings):
    """``rows`` (of one profile) with ``least_bandwidth``: the least
    bandwidth (bytes/s) :func:`sizing.plan` finds under each row's dirty
    log and order for ``deadline`` (s), ``max_downtime`` (s) at
    ``confidence`` over ``link_capacity`` bytes/s, with the further
    MigrationSettings fields ``settings``."""
    out = []
    for row in rows:
        pl = sizing.plan(profile, deadline=deadline,
                         max_downtime=max_downtime, confidence=confidence,
                         link_capacity=link_capacity,
                         dirty_log=row.dirty_log, order=row.order,
                         **settings)
        out.append(dataclasses.replace(
            row, least_bandwidth=pl.bandwidth if pl.feasible else None))
    return out


def _median(dist):
    """Median of a prediction's distribution; inf where the mass that
    does not converge is the larger half."""
    value = float(dist.quantile(0.5))
    return value if math.isfinite(value) else math.inf


def effect(rows):
    """{(workload, dirty_log): {field: rate order's value / address
    order's}} for total_s, downtime_s, sent_bytes and least_bandwidth:
    below 1 where cold-first order helps.  None where either is infinite
    or missing."""
    by = {(r.workload, r.dirty_log, r.order): r for r in rows}
    out = {}
    for (workload, log, order), row in by.items():
        if order != "address" or (workload, log, "rate") not in by:
            continue
        rate = by[(workload, log, "rate")]
        ratios = {}
        for field in ("total_s", "downtime_s", "sent_bytes",
                      "least_bandwidth"):
            a, b = getattr(row, field), getattr(rate, field)
            ok = a is not None and b is not None and math.isfinite(a) \
                and math.isfinite(b) and a > 0
            ratios[field] = b / a if ok else None
        out[(workload, log)] = ratios
    return out
