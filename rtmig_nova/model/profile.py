"""The write behaviour of a guest's memory: a :class:`DirtyProfile`.

Every guest page is modelled as an independent write process with its own rate
(writes/s) and law (:mod:`.laws`): Poisson (writes at random instants) or
periodic (one write every 1/rate seconds at a random phase). Pages with rate 0
are *idle* (never written while observed); some of them may hold only zero
bytes, which QEMU sends as a short marker instead of a full page.

A profile is stored as a histogram of rates: the distinct rates (or narrow log-
spaced bins of them, see :data:`BIN_MANTISSA_BITS`) with the number of pages
and the law at each, so a 64 GiB guest costs kilobytes. The file format, and
the plain CSV histogram of :meth:`DirtyProfile.save_csv`, are documented in
``docs/profile-format.md``."""

import csv
import gzip
import io
import json
import math
import numbers

import numpy as np

from rtmig_nova import bounds
from rtmig_nova import safeio
from rtmig_nova.model import laws as _laws
from rtmig_nova.model import shrinkage as _shrinkage

FORMAT_NAME = "rtmig-dirty-profile"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)      # version 1: no laws (every page Poisson)
RATE_UNIT = "writes/s"
PAGE_SIZE_UNIT = "bytes"

# Rates are binned on a log scale with this many mantissa bits per octave
# (2**5 = 32 bins per doubling, relative width at most 1/32 = 3.1%).  The bin
# keeps the mean of its rates; the error this makes in P(page written in T) =
# 1 - exp(-rate*T) is second order in the bin width, far below the model's
# other errors.
BIN_MANTISSA_BITS = 5
_SHIFT = 52 - BIN_MANTISSA_BITS

# Intervals whose lengths and dirty counts a profile keeps in its metadata
# (a capture has tens to hundreds; beyond this only the totals are kept).
MAX_KEPT_INTERVALS = 10000

# The CSV histogram (DirtyProfile.save_csv / load_csv): this header, then one
# row per rate; rate 0 is the idle pages.
CSV_HEADER = ("rate_per_s", "pages")


class ProfileError(ValueError):
    """A profile or profile file is invalid; the message is one line."""


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_rates(name, rates):
    try:
        arr = np.asarray(rates, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers (writes/s)") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a one-dimensional array")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: a profile needs at least one page")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (arr < 0).any():
        raise ValueError(f"{name} contains negative rates")
    _check_max_rate(name, arr)
    return arr


def _check_max_rate(name, arr):
    top = float(arr.max()) if arr.size else 0.0
    if top > bounds.PAGE_WRITE_RATE.high:
        bounds.PAGE_WRITE_RATE.check(top, f"{name}: a rate")


_MAX_MEMORY_TEXT = bounds.fmt("size", bounds.MAX_GUEST_MEMORY)


def _max_pages(page_size):
    """Most pages of ``page_size`` bytes a guest can have."""
    return bounds.MAX_GUEST_MEMORY // page_size


_CHUNK = 1 << 18            # pages per chunk: bounded temporary memory
_NKEYS = 1 << (63 - _SHIFT)  # keys of non-negative doubles
_NONFINITE_KEY = 0x7FF << BIN_MANTISSA_BITS  # exponent all ones: inf, NaN


def bin_rates(rates, name="rates"):
    """Histogram of non-negative per-page rates (writes/s).

    Returns ``(bin_rates, bin_counts, idle_pages)``: the mean rate of each
    non-empty log bin (ascending), the pages in it, and the count of pages with
    rate exactly 0.  Validates as it goes (ValueError naming ``name``).
    One pass in chunks, no sort: 16 Mi pages take about 0.1 s.
    """
    rates = np.ascontiguousarray(rates, dtype=np.float64)
    counts = np.zeros(_NKEYS, dtype=np.int64)
    sums = np.zeros(_NKEYS)
    buf = np.empty(min(_CHUNK, rates.size), dtype=np.int64)
    for start in range(0, rates.size, _CHUNK):
        x = rates[start:start + _CHUNK]
        # The IEEE-754 bit pattern of a non-negative double is monotone in
        # its value: dropping low mantissa bits gives a log-spaced bin index
        # without calling log().  Sign bit set: negative (or -0.0, or -NaN).
        keys = np.right_shift(x.view(np.int64), _SHIFT, out=buf[:x.size])
        kmin = int(keys.min())
        if kmin < 0:
            if (x < 0).any():
                raise ValueError(f"{name} contains negative rates")
            x = np.abs(x)
            keys = np.right_shift(x.view(np.int64), _SHIFT, out=keys)
            kmin = int(keys.min())
        kmax = int(keys.max())
        if kmax >= _NONFINITE_KEY:
            raise ValueError(f"{name} contains NaN or infinite values")
        _check_max_rate(name, x)
        # Count over the keys present only (a chunk spans few of them).
        keys -= kmin
        counts[kmin:kmax + 1] += np.bincount(keys, minlength=kmax - kmin + 1)
        sums[kmin:kmax + 1] += np.bincount(keys, weights=x,
                                           minlength=kmax - kmin + 1)
    # Key 0 holds 0 and subnormal rates (< 2.3e-308 writes/s): idle pages.
    idle = int(counts[0])
    counts[0] = 0
    nz = np.flatnonzero(counts)
    return sums[nz] / counts[nz], counts[nz], idle


class DirtyProfile:
    """Write behaviour of a guest's memory (immutable).

    :ivar rates: page write rates of the bins, writes/s, ascending, all > 0
        (a rate appears at most once per law)
    :ivar counts: pages at each rate
    :ivar laws: the write law of each bin, codes of :data:`.laws.NAMES`
        (0 = poisson, 1 = periodic), int8
    :ivar idle_pages: pages never written (rate 0), zero pages included
    :ivar zero_pages: idle pages whose content is all zero bytes
    :ivar page_size: bytes per page
    :ivar metadata: free-form provenance (``source``, ``coarse``, ...)
    :ivar page_rates: per-page rates in guest address order (writes/s) when
        the profile was built from them, else ``None``; not stored in files.
    :ivar page_laws: per-page law codes alongside ``page_rates`` if any page
        is periodic, else ``None`` (all Poisson).
    """

    def __init__(self, rates, counts, idle_pages=0, zero_pages=0,
                 page_size=4096, metadata=None, page_rates=None, laws=None,
                 page_laws=None):
        page_size = bounds.check_page_size(page_size, "page_size")
        rates = np.asarray(rates, dtype=np.float64)
        counts = np.asarray(counts)
        if rates.ndim != 1 or counts.shape != rates.shape:
            raise ValueError("rates and counts must be 1-D arrays of the "
                             "same length")
        if rates.size:
            if not np.isfinite(rates).all() or (rates <= 0).any():
                raise ValueError("rates must be finite and > 0 writes/s "
                                 "(count never-written pages as idle_pages)")
            if not np.issubdtype(counts.dtype, np.integer) and not \
                    np.array_equal(counts, np.floor(counts)):
                raise ValueError("counts must be whole numbers of pages")
            if (counts < 0).any():
                raise ValueError("counts must be >= 0 pages")
        most = _max_pages(page_size)
        # Before the int64 sum below can wrap round.
        if counts.size and float(counts.max()) > most:
            raise ValueError(f"counts: {float(counts.max()):.6g} pages of "
                             f"{page_size} bytes are more than a guest "
                             f"holds (at most {_MAX_MEMORY_TEXT})")
        counts = counts.astype(np.int64)
        law = _laws.codes(laws, rates.size)
        for name, val in (("idle_pages", idle_pages),
                          ("zero_pages", zero_pages)):
            if isinstance(val, bool) or \
                    not isinstance(val, (int, np.integer)) or val < 0:
                raise ValueError(f"{name} must be an integer >= 0, "
                                 f"got {str(val)[:40]}")
            if val > most:
                raise ValueError(f"{name}: {val:.6g} pages of {page_size} "
                                 f"bytes are more than a guest holds "
                                 f"(at most {_MAX_MEMORY_TEXT})")
        if zero_pages > idle_pages:
            raise ValueError("zero_pages cannot exceed idle_pages: a zero "
                             "page is one that is never written")
        keep = counts > 0
        order = np.lexsort((law[keep], rates[keep]))
        self.rates = rates[keep][order]
        self.counts = counts[keep][order]
        self.laws = law[keep][order]
        self.idle_pages = int(idle_pages)
        self.zero_pages = int(zero_pages)
        self.page_size = page_size
        self.metadata = dict(metadata or {})
        if self.total_pages == 0:
            raise ValueError("profile is empty: it has no pages")
        bounds.GUEST_MEMORY.check(self.memory_bytes, "profile memory")
        if page_rates is not None and len(page_rates) != self.total_pages:
            raise ValueError("page_rates does not match the histogram")
        self.page_rates = page_rates
        if page_laws is not None and (page_rates is None or
                                      len(page_laws) != len(page_rates)):
            raise ValueError("page_laws does not match page_rates")
        self.page_laws = page_laws
        self.rates.setflags(write=False)
        self.counts.setflags(write=False)
        self.laws.setflags(write=False)

    # -- constructors -----------------------------------------------------

    @classmethod
    def from_rates(cls, rates, page_size=4096, zero_pages=0, metadata=None,
                   laws=None):
        """Profile from per-page write rates (writes/s; 0 = never written),
        in guest address order.  ``zero_pages`` of the never-written pages
        hold only zero bytes.  ``laws``: the write law of every page (names
        or codes of :data:`.laws.NAMES`), one law for all, or None (all
        Poisson).  The profile keeps a read-only view of ``rates`` (for the
        page-level simulator), not a copy."""
        arr = np.asarray(rates, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError("rates must be a non-empty one-dimensional "
                             "array of per-page rates (writes/s)")
        meta = {"source": "rates", "coarse": False}
        meta.update(metadata or {})
        # A read-only view, not a copy (a 64 GiB guest has 128 MiB of rates):
        # the caller must not modify the array afterwards.
        view = arr.view()
        view.setflags(write=False)
        page_laws = None if laws is None else _laws.codes(laws, arr.size)
        if page_laws is None or not page_laws.any():
            brates, bcounts, idle = bin_rates(arr)
            return cls(brates, bcounts, idle, zero_pages, page_size, meta,
                       page_rates=view)
        # Each law binned on its own: a bin holds pages of one law.
        per = page_laws == _laws.PERIODIC_CODE
        r0, c0, i0 = bin_rates(arr[~per])
        r1, c1, i1 = bin_rates(arr[per])
        page_laws.setflags(write=False)
        return cls(np.concatenate((r0, r1)), np.concatenate((c0, c1)),
                   i0 + i1, zero_pages, page_size, meta, page_rates=view,
                   laws=np.repeat(np.int8([0, 1]), (r0.size, r1.size)),
                   page_laws=page_laws)

    @classmethod
    def from_histogram(cls, rates, counts, idle_pages=0, zero_pages=0,
                       page_size=4096, metadata=None, laws=None):
        """Profile from a histogram: ``counts[i]`` pages written at
        ``rates[i]`` writes/s under law ``laws[i]`` (names or codes of
        :data:`.laws.NAMES`; one law for all; None: all Poisson), plus
        ``idle_pages`` never written."""
        arr = _check_rates("rates", rates) if len(rates) else \
            np.zeros(0, dtype=np.float64)
        cnt = np.asarray(counts)
        if cnt.shape != arr.shape:
            raise ValueError("counts must have one entry per rate")
        law = _laws.codes(laws, arr.size)
        if (arr == 0).any():
            idle_pages = int(idle_pages) + int(cnt[arr == 0].sum())
            cnt, law, arr = cnt[arr > 0], law[arr > 0], arr[arr > 0]
        meta = {"source": "histogram", "coarse": False}
        meta.update(metadata or {})
        return cls(arr, cnt, idle_pages, zero_pages, page_size, meta,
                   laws=law)

    @classmethod
    def from_observations(cls, observations, intervals, total_pages,
                          page_size=4096, zero_pages=0, metadata=None):
        """Rates from observed dirty page sets: each page's maximum
        likelihood rate, then for Poisson pages the posterior mean given
        every page's pattern (:mod:`.shrinkage`).

        :param observations: one entry per observed interval: the indices of
            the pages found dirty (written at least once) in that interval,
            or a boolean array over all pages.
        :param intervals: the length of each interval, seconds (a scalar if
            all are equal).
        :param total_pages: pages in the guest.

        A page dirty in k of m intervals of equal length tau has the MLE rate
        ``-ln(1 - k/m) / tau``; with unequal lengths the score equation is
        solved by Newton's method.  A page dirty in every interval has an
        unbounded MLE; it gets the rate for k = m - 1/2 (a standard
        continuity correction), at least the rate that dirties it in every
        100 ms pending-check window (:data:`.laws.SATURATED_POISSON_RATE`):
        "hotter than the intervals can resolve", taken as dirty in every
        window (the conservative reading; see :mod:`.laws`).

        The law: pages are grouped by their Poisson rate and a group is
        periodic where its likelihood clearly says so
        (:func:`.laws.estimate`, :func:`.laws.choose`; only unequal
        intervals can show it); its pages then get their periodic MLE
        rate.  ``metadata["laws"]`` reports the choice.  The work is per
        distinct dirty pattern, not per page: 16 Mi pages with 1 Mi active
        over 16 intervals take a few seconds.
        """
        total_pages = _check_positive_int("total_pages", total_pages)
        obs = [np.flatnonzero(o) if np.asarray(o).dtype == bool
               else np.asarray(o, dtype=np.int64) for o in observations]
        if not obs:
            raise ValueError("observations is empty: need at least one "
                             "observed interval")
        m = len(obs)
        tau = np.broadcast_to(np.asarray(intervals, dtype=np.float64),
                              (m,)).copy() if np.ndim(intervals) == 0 else \
            np.asarray(intervals, dtype=np.float64)
        if tau.shape != (m,):
            raise ValueError("intervals must be one length (seconds) per "
                             "observation")
        if not np.isfinite(tau).all() or (tau <= 0).any():
            raise ValueError("intervals must be finite and > 0 seconds")
        for o in obs:
            if o.size and (o.min() < 0 or o.max() >= total_pages):
                raise ValueError("observations contain page indices outside "
                                 f"0..{total_pages - 1}")
        active, rows, inv, pages = _patterns(obs, total_pages)
        prate, plaw, report = _laws.estimate(rows, pages, tau)
        # Each Poisson page's rate given every page's pattern, not its own
        # alone (whose scatter lowers long windows' dirty pages).
        prate, shrunk = _shrinkage.posterior_rates(rows, pages, tau, prate,
                                                   plaw)
        rates = np.zeros(total_pages)
        rates[active] = prate[inv]
        page_laws = None
        if plaw.any():
            page_laws = np.zeros(total_pages, dtype=np.int8)
            page_laws[active] = plaw[inv]
        meta = {"source": "observations", "coarse": False,
                "observed_intervals": m,
                "observed_seconds": float(tau.sum()), "laws": report,
                "rates": "empirical Bayes", "shrunk_pages": shrunk}
        if m <= MAX_KEPT_INTERVALS:
            # What each interval saw: the spread of the write intensity
            # between intervals (model.uncertainty) is read from these.
            meta["observed_interval_s"] = [round(float(t), 6) for t in tau]
            meta["observed_dirty_pages"] = [int(np.unique(o).size)
                                            for o in obs]
        meta.update(metadata or {})
        return cls.from_rates(rates, page_size, zero_pages, meta,
                              laws=page_laws)

    @classmethod
    def from_aggregate_rate(cls, memory_bytes, dirty_rate, page_size=4096,
                            working_set_bytes=None, metadata=None):
        """Coarse fallback from one aggregate dirty rate (bytes/s).

        The rate is spread evenly over the working set (default: all of
        memory), so that ``dirty_rate / page_size`` pages/s are written.  This
        loses the hot/cold structure the model exists to capture: the profile
        is flagged ``coarse`` and every prediction from it says so.
        """
        memory_bytes = _check_positive_int("memory_bytes", memory_bytes)
        page_size = _check_positive_int("page_size", page_size)
        if not (isinstance(dirty_rate, (int, float, np.number))
                and math.isfinite(dirty_rate) and dirty_rate >= 0):
            raise ValueError("dirty_rate must be a finite number >= 0 "
                             "bytes/s")
        pages = memory_bytes // page_size
        if pages == 0:
            raise ValueError("memory_bytes is smaller than one page")
        ws = pages if working_set_bytes is None else \
            _check_positive_int("working_set_bytes",
                                working_set_bytes) // page_size
        if not 0 < ws <= pages:
            raise ValueError("working_set_bytes must be between one page "
                             "and memory_bytes")
        meta = {"source": "aggregate", "coarse": True,
                "aggregate_dirty_rate_bytes_per_s": float(dirty_rate)}
        meta.update(metadata or {})
        if dirty_rate == 0:
            return cls([], [], pages, 0, page_size, meta)
        per_page = dirty_rate / page_size / ws
        return cls([per_page], [ws], pages - ws, 0, page_size, meta)

    # -- derived quantities -----------------------------------------------

    @property
    def total_pages(self):
        return int(self.counts.sum()) + self.idle_pages

    @property
    def memory_bytes(self):
        """Guest RAM, bytes."""
        return self.total_pages * self.page_size

    @property
    def active_pages(self):
        """Pages with a write rate > 0."""
        return int(self.counts.sum())

    @property
    def write_rate(self):
        """Total page writes per second over all pages."""
        return float(np.dot(self.rates, self.counts))

    @property
    def coarse(self):
        """True if only an aggregate dirty rate was known."""
        return bool(self.metadata.get("coarse", False))

    @property
    def synthetic(self):
        """True if the profile was made up, not captured from a guest."""
        return bool(self.metadata.get("synthetic", False))

    @property
    def periodic(self):
        """Boolean per bin: the bin's pages are periodic writers."""
        return self.laws == _laws.PERIODIC_CODE

    def law_pages(self):
        """Active pages per law: {law name: pages}."""
        return {name: int(self.counts[self.laws == i].sum())
                for i, name in enumerate(_laws.NAMES)}

    def dirty_probabilities(self, interval):
        """P(a page of each rate bin is written in ``interval`` seconds),
        by the bin's law."""
        return _laws.dirty_prob(float(interval), self.rates, self.periodic)

    def dirty_pages(self, interval):
        """Expected distinct pages written in ``interval`` seconds."""
        return float(np.dot(self.counts, self.dirty_probabilities(interval)))

    def dirty_rate(self, interval=1.0):
        """Aggregate dirty rate, bytes/s, as a sampler of ``interval``
        seconds sees it (distinct pages written / interval x page size)."""
        return self.dirty_pages(interval) * self.page_size / interval

    def page_rates_array(self, rng=None):
        """Per-page rates in address order (writes/s).  A histogram profile
        has no addresses: its pages are laid out in a random order drawn
        from ``rng`` (seeded generator or seed)."""
        return self.page_layout(rng)[0]

    def page_layout(self, rng=None):
        """Per-page rates (writes/s) and the boolean mask of periodic pages
        (None if none is) in address order; a histogram's pages in a
        random order from ``rng``, as :meth:`page_rates_array`."""
        if self.page_rates is not None:
            per = None if self.page_laws is None else \
                self.page_laws == _laws.PERIODIC_CODE
            return self.page_rates, per
        reps = np.concatenate(([self.idle_pages], self.counts))
        arr = np.repeat(np.concatenate(([0.0], self.rates)), reps)
        gen = np.random.default_rng(rng)
        if not self.periodic.any():
            gen.shuffle(arr)
            return arr, None
        per = np.repeat(np.concatenate(([False], self.periodic)), reps)
        order = gen.permutation(arr.size)
        return arr[order], per[order]

    def __repr__(self):
        return (f"<DirtyProfile {self.memory_bytes / 2**20:.0f} MiB, "
                f"{self.active_pages} active / {self.total_pages} pages, "
                f"{self.rates.size} rate bins, "
                f"source={self.metadata.get('source')}>")

    # -- files --------------------------------------------------------------

    def to_dict(self):
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "page_size": {"value": self.page_size, "unit": PAGE_SIZE_UNIT},
            "rate_unit": RATE_UNIT,
            "idle_pages": self.idle_pages,
            "zero_pages": self.zero_pages,
            "histogram": {"rates": [float(r) for r in self.rates],
                          "pages": [int(c) for c in self.counts],
                          "laws": [_laws.NAMES[i] for i in
                                   self.laws.tolist()]},
            "metadata": self.metadata,
        }

    def save(self, path):
        """Write the profile as JSON (gzip-compressed if ``path`` ends in
        ``.gz``)."""
        doc = self.to_dict()
        hist = doc.pop("histogram")
        # One line per list keeps the file small and diffable.
        text = json.dumps(doc, indent=1, sort_keys=True)[:-2] + \
            ',\n "histogram": {\n  "rates": ' + json.dumps(hist["rates"]) + \
            ',\n  "pages": ' + json.dumps(hist["pages"]) + \
            ',\n  "laws": ' + json.dumps(hist["laws"]) + "\n }\n}"
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "wt", encoding="utf-8") as f:
            f.write(text + "\n")

    @classmethod
    def from_dict(cls, doc, origin="profile"):
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ProfileError(f"{origin}: not an rtmig dirty profile "
                               f"(no \"format\": \"{FORMAT_NAME}\")")
        version = doc.get("version")
        if isinstance(version, bool) or version not in READ_VERSIONS:
            raise ProfileError(f"{origin}: unsupported profile version "
                               f"{str(version)[:20]!r} (this build reads "
                               f"{', '.join(map(str, READ_VERSIONS))})")
        try:
            ps = doc["page_size"]
            if not isinstance(ps, dict) or ps.get("unit") != PAGE_SIZE_UNIT:
                raise ProfileError(f"{origin}: page_size must be given in "
                                   f"{PAGE_SIZE_UNIT}")
            if doc["rate_unit"] != RATE_UNIT:
                raise ProfileError(f"{origin}: rate_unit is "
                                   f"{doc['rate_unit']!r}, expected "
                                   f"{RATE_UNIT!r}")
            hist = doc["histogram"]
            rates, pages = hist["rates"], hist["pages"]
            if not isinstance(rates, list) or not isinstance(pages, list):
                raise ProfileError(f"{origin}: histogram rates and pages "
                                   "must be lists")
            if not all(isinstance(c, int) and not isinstance(c, bool)
                       for c in pages):
                raise ProfileError(f"{origin}: histogram pages must be "
                                   "whole numbers")
            page_size = bounds.check_page_size(ps.get("value"),
                                               "page_size")
            most = _max_pages(page_size)
            # Python ints beyond int64 or float would raise OverflowError
            # in numpy: bounded here, as numbers.
            if any(c > most for c in pages):
                raise ProfileError(
                    f"{origin}: histogram pages: a count above {most} "
                    f"pages of {page_size} bytes "
                    f"({_MAX_MEMORY_TEXT} of memory)")
            for r in rates:
                if isinstance(r, bool) or not isinstance(r, numbers.Real):
                    raise ProfileError(f"{origin}: histogram rates must be "
                                       f"numbers (writes/s)")
                if r < 0:
                    raise ProfileError(f"{origin}: histogram rates: "
                                       f"negative rate {float(r):.6g}")
                bounds.PAGE_WRITE_RATE.check(r, "histogram rates")
            law = None
            if version >= 2:
                law = hist["laws"]
                if not isinstance(law, list) or len(law) != len(pages):
                    raise ProfileError(f"{origin}: histogram laws must be a "
                                       f"list of one law per bin")
                if not all(isinstance(x, str) for x in law):
                    raise ProfileError(f"{origin}: histogram laws must be "
                                       f"law names ({', '.join(_laws.NAMES)})")
            meta = doc.get("metadata") or {}
            if not isinstance(meta, dict):
                raise ProfileError(f"{origin}: metadata must be an object")
            profile = cls.from_histogram(
                np.asarray(rates, dtype=np.float64), np.asarray(
                    pages, dtype=np.int64),
                doc["idle_pages"], doc["zero_pages"], page_size, meta,
                laws=law)
            _check_interval_record(profile, origin)
            return _raise_saturated(profile)
        except ProfileError:
            raise
        except KeyError as e:
            raise ProfileError(f"{origin}: missing field {e}") from None
        except (TypeError, ValueError) as e:
            raise ProfileError(f"{origin}: {e}") from None

    @classmethod
    def load(cls, path):
        """Read a profile file (JSON, optionally gzip-compressed).  Any
        problem raises :class:`ProfileError` with a one-line message."""
        raw = _read_file(path)
        try:
            if raw[:2] == safeio.GZIP_MAGIC:
                raw = safeio.gunzip(raw, str(path), bounds.MAX_PROFILE_BYTES)
            doc = safeio.loads_json(raw, str(path))
        except safeio.ReadError as e:
            raise ProfileError(f"{path}: not a profile file (JSON, "
                               f"optionally gzip-compressed): "
                               f"{e.reason}") from None
        return cls.from_dict(doc, origin=str(path))

    def save_csv(self, path):
        """Write the histogram as CSV: the header ``rate_per_s,pages``, the
        row ``0,<idle pages>``, then one row per rate (writes/s, written
        with full precision, so :meth:`load_csv` gives the same rates back).
        The page size, the zero pages and the metadata are not stored."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(CSV_HEADER)
            w.writerow([0, self.idle_pages])
            for r, n in zip(self.rates, self.counts):
                w.writerow([repr(float(r)), int(n)])

    @classmethod
    def load_csv(cls, path, page_size=4096, zero_pages=0, metadata=None):
        """Read a CSV histogram (see :meth:`save_csv`).

        The first line must be ``rate_per_s,pages``; each further row is a
        rate (writes/s, finite, >= 0) and a whole number of pages (>= 0).
        Rows with rate 0 are idle pages and add up; blank lines and lines
        starting with ``#`` are skipped.  ``page_size`` and ``zero_pages``
        are not in the file.  Any problem raises :class:`ProfileError`
        with a one-line message naming the file and, for a bad line, its
        number.
        """
        raw = _read_file(path)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise ProfileError(f"{path}:{line}: not a histogram CSV (not "
                               f"UTF-8 text)") from None
        header = ",".join(CSV_HEADER)
        reader = csv.reader(io.StringIO(text, newline=""))
        rates, pages, idle, rows = [], [], 0, 0
        try:
            first = next(reader, None)
            if first is None:
                raise ProfileError(f"{path}:1: empty file; a histogram CSV "
                                   f"starts with the header '{header}'")
            if tuple(c.strip() for c in first) != CSV_HEADER:
                raise ProfileError(
                    f"{path}:1: not a histogram CSV: the header must be "
                    f"'{header}', got {','.join(first)!r}")
            for row in reader:
                if not row or all(not c.strip() for c in row) \
                        or row[0].lstrip().startswith("#"):
                    continue
                where = f"{path}:{reader.line_num}"
                if len(row) != 2:
                    raise ProfileError(f"{where}: expected 2 columns "
                                       f"({header}), got {len(row)}")
                rate = _csv_rate(row[0], where)
                n = _csv_pages(row[1], where)
                rows += 1
                if rate == 0:
                    idle += n
                else:
                    rates.append(rate)
                    pages.append(n)
        except csv.Error as e:
            raise ProfileError(f"{path}:{reader.line_num}: not a histogram "
                               f"CSV ({e})") from None
        if rows == 0:
            raise ProfileError(f"{path}: empty histogram: no rows after the "
                               f"header '{header}'")
        if idle == 0 and not any(pages):
            raise ProfileError(f"{path}: empty histogram: every row has 0 "
                               f"pages")
        try:
            return cls.from_histogram(
                np.asarray(rates, dtype=np.float64),
                np.asarray(pages, dtype=np.int64), idle_pages=idle,
                zero_pages=zero_pages, page_size=page_size,
                metadata=metadata)
        except ValueError as e:
            raise ProfileError(f"{path}: {e}") from None


def _csv_rate(cell, where):
    """The rate (writes/s) in a CSV cell: a finite number >= 0."""
    try:
        rate = float(cell)
    except ValueError:
        raise ProfileError(f"{where}: rate_per_s {cell.strip()!r} is not a "
                           f"number (writes/s)") from None
    if not math.isfinite(rate):
        raise ProfileError(f"{where}: rate_per_s {cell.strip()!r} is not "
                           f"finite")
    if rate < 0:
        raise ProfileError(f"{where}: rate_per_s {cell.strip()!r} is "
                           f"negative")
    if rate > bounds.PAGE_WRITE_RATE.high:
        try:
            bounds.PAGE_WRITE_RATE.check(rate, f"{where}: rate_per_s",
                                         cell.strip())
        except bounds.BoundError as e:
            # ProfileError is what the callers catch (Nova's too).
            raise ProfileError(str(e)) from None
    return rate


def _csv_pages(cell, where):
    """The page count in a CSV cell: a whole number >= 0."""
    try:
        n = int(cell.strip(), 10)
    except ValueError:
        try:
            float(cell)
        except ValueError:
            problem = "is not a number"
        else:
            problem = "is not a whole number"
        raise ProfileError(f"{where}: pages {cell.strip()!r} "
                           f"{problem}") from None
    if n < 0:
        raise ProfileError(f"{where}: pages {cell.strip()!r} is negative")
    # More pages than the largest guest of the least page size holds.
    most = _max_pages(bounds.PAGE_SIZE.low)
    if n > most:
        raise ProfileError(f"{where}: pages {cell.strip()[:40]!r} is too "
                           f"large (at most {most}: "
                           f"{_MAX_MEMORY_TEXT} of memory)")
    return n


def _raise_saturated(profile):
    """``profile`` with the pages its intervals saw dirty every time at
    the SATURATED rates of :mod:`.laws`, as :meth:`from_observations`
    now estimates them: a profile estimated before holds the lower bound
    its intervals give (``laws.saturated_bounds``; found from the
    metadata's interval record, to its six-decimal rounding).  The same
    profile when nothing is raised; else the count raised is in
    ``metadata["saturated_raised_pages"]``."""
    tau = profile.metadata.get("observed_interval_s")
    if not tau or profile.rates.size == 0:
        return profile
    bounds_ = _laws.saturated_bounds(tau)
    floors = (_laws.SATURATED_POISSON_RATE, _laws.SATURATED_PERIODIC_RATE)
    rates = profile.rates.copy()
    law = profile.laws if profile.laws is not None else \
        np.zeros(rates.size, dtype=np.int8)
    hit = np.zeros(rates.size, dtype=bool)
    for code, (bound, floor) in enumerate(zip(bounds_, floors)):
        if bound >= floor:
            continue
        mine = (law == code) & (np.abs(rates - bound) <= 1e-4 * bound)
        rates[mine] = floor
        hit |= mine
    if not hit.any():
        return profile
    meta = dict(profile.metadata)
    meta["saturated_raised_pages"] = int(profile.counts[hit].sum())
    return DirtyProfile.from_histogram(
        rates, profile.counts, profile.idle_pages, profile.zero_pages,
        profile.page_size, meta, laws=law)


def _check_interval_record(profile, origin):
    """ProfileError unless the metadata's record of the observed intervals
    (``observed_interval_s``, ``observed_dirty_pages``; see
    :meth:`DirtyProfile.from_observations`), if any, is two lists of one
    entry per interval: lengths in seconds within a capture's, whole
    counts of pages the guest has."""
    meta = profile.metadata
    tau, dirty = meta.get("observed_interval_s"), \
        meta.get("observed_dirty_pages")
    if tau is None and dirty is None:
        return
    if not isinstance(tau, list) or not isinstance(dirty, list) or \
            len(tau) != len(dirty) or len(tau) > MAX_KEPT_INTERVALS:
        raise ProfileError(
            f"{origin}: metadata observed_interval_s and "
            f"observed_dirty_pages must be two lists of one entry per "
            f"interval (at most {MAX_KEPT_INTERVALS})")
    longest = bounds.CAPTURE_DURATION.high
    for t in tau:
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or \
                not 0 < t <= longest:
            raise ProfileError(
                f"{origin}: metadata observed_interval_s: {str(t)[:20]} is "
                f"not a length in (0, {longest:g}] seconds")
    for n in dirty:
        if isinstance(n, bool) or not isinstance(n, int) or \
                not 0 <= n <= profile.total_pages:
            raise ProfileError(
                f"{origin}: metadata observed_dirty_pages: {str(n)[:20]} "
                f"is not a page count in 0..{profile.total_pages}")


def _read_file(path):
    """The bytes of ``path`` (at most bounds.MAX_PROFILE_BYTES);
    ProfileError (one line) if unreadable or larger."""
    try:
        return safeio.read_file(path, bounds.MAX_PROFILE_BYTES)
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    except safeio.ReadError as e:
        raise ProfileError(str(e)) from None


def _patterns(obs, total_pages):
    """The distinct dirty patterns of the pages dirty at least once.

    :returns: (indices of those pages, boolean matrix patterns x
        intervals, each page's pattern row, pages per pattern)
    """
    m = len(obs)
    if m <= 64:
        # A page's pattern as the bits of one integer: np.unique on
        # integers, not rows.
        key = np.zeros(total_pages, dtype=np.uint64)
        for i, o in enumerate(obs):
            key[o] |= np.uint64(1) << np.uint64(i)
        active = np.flatnonzero(key)
        uniq, inv, pages = np.unique(key[active], return_inverse=True,
                                     return_counts=True)
        rows = ((uniq[:, None] >> np.arange(m, dtype=np.uint64)) &
                np.uint64(1)).astype(bool)
        return active, rows, inv.ravel(), pages
    seen = np.zeros(total_pages, dtype=bool)
    for o in obs:
        seen[o] = True
    active = np.flatnonzero(seen)
    pos = np.full(total_pages, -1, dtype=np.int64)
    pos[active] = np.arange(active.size)
    dirty = np.zeros((active.size, m), dtype=bool)
    for i, o in enumerate(obs):
        dirty[pos[o], i] = True
    packed = np.packbits(dirty, axis=1)
    keys = np.ascontiguousarray(packed).view(
        np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inv, pages = np.unique(keys, return_index=True,
                                     return_inverse=True, return_counts=True)
    return active, dirty[first], inv.ravel(), pages
