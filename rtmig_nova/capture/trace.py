"""Dirty page observations from QEMU's trace of a pre-copy migration.

QEMU built with the ``log`` trace backend writes one line per enabled trace
event (``-trace events=FILE,file=PATH``).  With ``-msg timestamp=on`` each
line is (scripts/tracetool/backend/log.py)::

    TID@SECONDS.MICROS:EVENT_NAME ARGS

where TID is the thread id and SECONDS.MICROS the gettimeofday() time (six
digits of microseconds).  Without ``-msg timestamp=on`` the line is just
``EVENT_NAME ARGS``, which has no time and is rejected here.  Three events
are used, two of migration/ram.c and one of migration/migration.c (formats
from migration/trace-events, the same in QEMU 7.2 and 10.0)::

    migration_bitmap_sync_end dirty_pages N
    ram_save_page BLOCK: offset: 0xOFFSET host: 0xADDR
    migration_thread_low_pending PENDING_BYTES

``migration_bitmap_sync_end`` closes a sync of the dirty bitmap; every
``ram_save_page`` after it until the next sync sends one page found dirty at
that sync (zero pages go by ``save_zero_page`` and are *not* traced).  With a
``downtime-limit`` so small that QEMU only syncs again once every dirty page
has been sent, the pages of a round are exactly the pages written between the
two previous syncs.  So the round after sync j >= 2, closed by sync j + 1, is
one observation: the pages dirtied in the interval (t[j-1], t[j]].  The round
after the first sync is the full first pass (every non-zero page) and the
round after the last sync is unfinished; neither is an observation.

Except when the migration converges: ``migration_thread_low_pending``
comes right after the sync that found fewer bytes pending than the
switch-over threshold (bandwidth x downtime-limit), just before QEMU stops
the guest, with those bytes as argument.  The round after that sync is
never sent (a probe is cancelled in ``pre-switchover``), yet it is known:
at most PENDING_BYTES / page size pages (usually none) were dirtied in the
interval before that sync, so the interval is an observation with no pages
(the pending ones, whose identity the trace does not give, are counted in
:attr:`TraceParser.unseen_pages`).  Leaving it out biases the short
intervals: a round sent in one rate-limit burst is closed by a sync a
millisecond or less after the one before, and such an interval became an
observation only when the guest dirtied more than the threshold in it, for
otherwise the migration converged there.  Pages written in bursts (a
kernel's timer and scheduler pages, which QEMU 10's TCG dirty tracking
sees and 7.2's lost: see docs/testbed.md) then looked written hundreds of
times a second.  If the low pending follows pages sent since the last sync
with nothing pending, that round was sent in full without a sync and is
the observation; with bytes pending it is none.  The final sync after the
switch-over (guest stopped) closes nothing: its round is the downtime.

The ``dirty_pages`` of ``migration_bitmap_sync_end`` is QEMU's
``num_dirty_pages_period``, a count summed over syncs until the rate is
recomputed (about once a second), not the pages of one sync; it is kept
(:attr:`TraceParser.syncs`) but not used.  QEMU's bandwidth limit lets a
burst through at the start of each 100 ms window: keep ``max-bandwidth`` low
enough that a round spans several windows, or rounds of a few pages sent
in one burst make intervals of well under a millisecond.  A page written
in every interval gets only the rate the intervals can resolve (see
:meth:`DirtyProfile.from_observations`).  One trace must hold one
migration: the first pass of a second migration is not recognised.

The parser is incremental (:meth:`TraceParser.feed` takes bytes as they
arrive from a file or a FIFO), keeps only the current round's page set, and
bounds the length of a line (:data:`MAX_LINE`) so garbage cannot make it eat
memory.  A malformed line of one of these events is a :class:`TraceError`;
other lines are skipped.
"""

import array
import re

import numpy as np

from rtmig_nova import bounds
from rtmig_nova.model.profile import DirtyProfile

SYNC_EVENT = "migration_bitmap_sync_end"
PAGE_EVENT = "ram_save_page"
LOW_PENDING_EVENT = "migration_thread_low_pending"
EVENTS = (SYNC_EVENT, PAGE_EVENT, LOW_PENDING_EVENT)
MAX_LINE = 4096          # bytes, newline excluded
CHUNK = 65536
# Pages of a RAM block a capture follows (bounds.TRACED_PAGES): a page
# beyond them is refused, not given a per-page array of its index's size.
MAX_PAGES = bounds.MAX_TRACED_PAGES
# Other RAM blocks are counted by name, the first few of them.
MAX_OTHER_BLOCKS = 64
OTHER_BLOCKS = "(other blocks)"

_PREFIX_RE = re.compile(rb"(\d{1,10})@(\d{1,12})\.(\d{6}):([A-Za-z0-9_]+)")
_SYNC_ARGS_RE = re.compile(rb"dirty_pages (\d{1,20})")
_LOW_PENDING_ARGS_RE = re.compile(rb"(\d{1,20})")
_PAGE_ARGS_RE = re.compile(
    rb"(.+): offset: 0x([0-9a-fA-F]{1,16}) host: (?:0x[0-9a-fA-F]{1,16}"
    rb"|\(nil\))")
_OURS = tuple(e.encode() for e in EVENTS)


class TraceError(ValueError):
    """A trace that cannot be read (the message is one line)."""


def _short(line, n=80):
    text = line[:n].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(line) > n else ""))


class TraceParser:
    """Incremental reader of a QEMU log-backend trace of one migration.

    Feed it bytes with :meth:`feed` (any chunking: a line may be split
    anywhere), then call :meth:`close` at end of input.  It aggregates per
    round as it goes; :meth:`observations` gives the result.
    """

    def __init__(self, ram_block="pc.ram", page_size=4096, max_line=MAX_LINE):
        if not isinstance(page_size, int) or page_size <= 0 or \
                page_size & (page_size - 1):
            raise ValueError("page_size must be a power of two > 0 bytes")
        self.ram_block = ram_block.encode() if isinstance(ram_block, str) \
            else bytes(ram_block)
        self.page_size = page_size
        self.max_line = int(max_line)
        self._buf = bytearray()
        self._lineno = 0
        self._closed = False
        self.syncs = []            # (time s, dirty_pages) of every sync
        # Pages of the current round as sent (8 bytes each, deduplicated
        # when they outgrow the block: a set took 70), or None.
        self._round = None
        self._rounds_done = 0      # rounds closed by a sync
        self.observations_ = []    # np.int64 arrays
        self.intervals = []        # seconds
        self.max_page = -1
        self.first_pass_pages = 0
        # Pages sent in the first pass: every page that was not all zero
        # bytes then (zero pages go untraced).
        self.first_pass = np.zeros(0, dtype=np.int64)
        self.pages_before_sync = 0
        self.other_blocks = {}     # block name -> pages sent
        self.skipped_lines = 0
        self.zero_intervals = 0
        # The migration's switch-over (migration_thread_low_pending): its
        # time and pending bytes, or None; the pages QEMU found pending
        # then and never sent (not in any observation).
        self.low_pending = None
        self.unseen_pages = 0
        # Observations added at the switch-over (0 or 1).
        self.converged_intervals = 0
        # The current round is accounted for (at the switch-over): the
        # sync after it closes nothing.
        self._round_closed = False

    # -- input ----------------------------------------------------------
    def feed(self, data):
        """Take the next bytes of the trace (str is encoded as UTF-8)."""
        if self._closed:
            raise TraceError("trace parser fed after close()")
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._buf += data[start:]
                if len(self._buf) > self.max_line:
                    raise TraceError(
                        f"trace line {self._lineno + 1} is longer than "
                        f"{self.max_line} bytes: {_short(bytes(self._buf))}")
                return
            if self._buf:
                self._buf += data[start:nl]
                line = bytes(self._buf)
                self._buf.clear()
            else:
                line = data[start:nl]
            if len(line) > self.max_line:
                raise TraceError(
                    f"trace line {self._lineno + 1} is longer than "
                    f"{self.max_line} bytes: {_short(line)}")
            self._line(line)
            start = nl + 1

    def close(self):
        """End of input: a final line without its newline is an error
        (the trace was cut short)."""
        if self._closed:
            return
        self._closed = True
        if self._buf:
            raise TraceError(
                f"trace truncated: line {self._lineno + 1} has no newline "
                f"at end of input: {_short(bytes(self._buf))}")

    # -- lines ----------------------------------------------------------
    def _line(self, line):
        self._lineno += 1
        line = line.rstrip(b"\r")
        m = _PREFIX_RE.match(line)
        if m is None:
            for ev in _OURS:
                if line.startswith(ev + b" ") or line == ev:
                    raise TraceError(
                        f"trace line {self._lineno}: {ev.decode()} without "
                        f"a timestamp; run QEMU with -msg timestamp=on")
            if any(b":" + ev in line[:64] for ev in _OURS):
                raise TraceError(f"trace line {self._lineno}: malformed "
                                 f"prefix: {_short(line)}")
            self.skipped_lines += 1
            return
        name = m.group(4)
        if name not in _OURS:
            self.skipped_lines += 1
            return
        rest = line[m.end():]
        if not rest.startswith(b" "):
            raise TraceError(f"trace line {self._lineno}: {name.decode()} "
                             f"without arguments: {_short(line)}")
        t = int(m.group(2)) + int(m.group(3)) * 1e-6
        if name == _OURS[0]:
            a = _SYNC_ARGS_RE.fullmatch(rest, 1)
            if a is None:
                raise TraceError(f"trace line {self._lineno}: bad "
                                 f"{SYNC_EVENT} arguments: {_short(line)}")
            self._sync(t, int(a.group(1)))
        elif name == _OURS[2]:
            a = _LOW_PENDING_ARGS_RE.fullmatch(rest, 1)
            if a is None:
                raise TraceError(f"trace line {self._lineno}: bad "
                                 f"{LOW_PENDING_EVENT} arguments: "
                                 f"{_short(line)}")
            self._low_pending(t, int(a.group(1)))
        else:
            a = _PAGE_ARGS_RE.fullmatch(rest, 1)
            if a is None:
                raise TraceError(f"trace line {self._lineno}: bad "
                                 f"{PAGE_EVENT} arguments: {_short(line)}")
            offset = int(a.group(2), 16)
            if offset % self.page_size:
                raise TraceError(
                    f"trace line {self._lineno}: page offset 0x{offset:x} "
                    f"is not a multiple of the page size {self.page_size}")
            if offset // self.page_size >= MAX_PAGES and \
                    a.group(1) == self.ram_block:
                raise TraceError(
                    f"trace line {self._lineno}: page offset 0x{offset:x} "
                    f"is beyond the {MAX_PAGES} pages a per-page capture "
                    f"holds ({bounds.TRACED_PAGES.why})")
            self._page(a.group(1), offset // self.page_size)

    def _sync(self, t, dirty_pages):
        if self.syncs and t < self.syncs[-1][0]:
            raise TraceError(
                f"trace line {self._lineno}: {SYNC_EVENT} at {t:.6f} s is "
                f"before the previous one at {self.syncs[-1][0]:.6f} s")
        if self._round is not None and not self._round_closed:
            self._close_round(self._pages())
        self.syncs.append((t, dirty_pages))
        self._round = array.array("q")
        self._round_closed = False

    def _close_round(self, pages):
        """The current round (after the last sync) is complete: the first
        pass, or an observation."""
        self._rounds_done += 1
        if self._rounds_done == 1:
            self.first_pass_pages = len(pages)
            self.first_pass = pages
            return False
        # The round after sync j (j = len(self.syncs) >= 2): pages
        # dirtied between syncs j-1 and j.
        tau = self.syncs[-1][0] - self.syncs[-2][0]
        if tau > 0:
            self.observations_.append(pages)
            self.intervals.append(tau)
            return True
        self.zero_intervals += 1
        return False

    def _low_pending(self, t, pending):
        """The migration switches over with ``pending`` bytes found dirty
        (see the module's docstring)."""
        if self.low_pending is not None or self._round is None:
            # a second switch-over (one trace, one migration), or one
            # before any sync: nothing known about a round
            self.skipped_lines += 1
            return
        self.low_pending = (t, pending)
        sent = len(self._round)
        if sent and pending:
            # Part of the round sent, the rest goes after the final sync:
            # not known, no observation.
            self._round_closed = True
            return
        if not sent:
            # Never sent: the pages dirtied since the sync before, all
            # still pending.
            self.unseen_pages = -(-pending // self.page_size)
            pages = np.zeros(0, dtype=np.int64)
        else:
            pages = self._pages()   # sent in full, without a sync
        if self._close_round(pages) and not sent:
            self.converged_intervals += 1
        self._round_closed = True

    def _pages(self):
        """The current round's pages, sorted, each once (np.int64)."""
        return np.unique(np.frombuffer(self._round, dtype=np.int64)) \
            if len(self._round) else np.zeros(0, dtype=np.int64)

    def _page(self, block, page):
        if block != self.ram_block:
            name = block.decode("utf-8", "backslashreplace")[:80]
            if name not in self.other_blocks and \
                    len(self.other_blocks) >= MAX_OTHER_BLOCKS:
                name = OTHER_BLOCKS
            self.other_blocks[name] = self.other_blocks.get(name, 0) + 1
            return
        if self._round is None:
            self.pages_before_sync += 1
            return
        self._round.append(page)
        if len(self._round) > 2 * MAX_PAGES:
            # Pages sent again within a round (QEMU sends each once):
            # held once, so a round never holds more than the block.
            self._round = array.array("q", self._pages().tobytes())
        if page > self.max_page:
            self.max_page = page

    # -- results --------------------------------------------------------
    def never_sent(self, total_pages):
        """Pages of ``0..total_pages-1`` neither sent in the first pass nor
        dirtied in any complete round since: all zero bytes at the start
        and never written.  Only meaningful once the first pass is over."""
        return pages_never_sent([self], total_pages)

    def observations(self):
        """(observations, intervals, total pages seen): the page-index
        arrays of the complete rounds after the first pass, the interval
        (seconds) each covers, and 1 + the highest page index sent."""
        return (list(self.observations_), list(self.intervals),
                self.max_page + 1)


def pages_never_sent(parsers, total_pages):
    """Pages of ``0..total_pages-1`` that none of ``parsers`` (one per probe
    migration of the same guest) saw sent, in a first pass or a complete
    round."""
    if not 0 <= int(total_pages) <= MAX_PAGES:
        raise TraceError(f"total_pages {int(total_pages)} is outside 0.."
                         f"{MAX_PAGES}, the pages a per-page capture holds")
    seen = np.zeros(int(total_pages), dtype=bool)
    for parser in parsers:
        for pages in [parser.first_pass] + parser.observations_:
            seen[pages[pages < seen.size]] = True
    return int(seen.size - np.count_nonzero(seen))


def _chunks(source, chunk=CHUNK):
    """Bytes chunks of a file object (binary or text), bytes/str, or an
    iterable of chunks (lines keep their newlines, as from a file)."""
    if isinstance(source, (bytes, bytearray, memoryview, str)):
        yield source
        return
    read = getattr(source, "read1", None) or getattr(source, "read", None)
    if read is not None:
        while True:
            data = read(chunk)
            if not data:
                return
            yield data
    else:
        yield from source


def parse_trace(source, ram_block="pc.ram", page_size=4096,
                max_line=MAX_LINE):
    """Read a whole trace (see :func:`_chunks` for ``source``) to its end;
    returns the closed :class:`TraceParser`."""
    p = TraceParser(ram_block, page_size, max_line)
    for data in _chunks(source):
        p.feed(data)
    p.close()
    return p


def observations_from_trace(lines, ram_block="pc.ram", page_size=4096):
    """(list of page-index arrays, list of interval seconds, total pages
    seen) from a trace: a binary or text file object / FIFO, its content as
    bytes or str, or an iterable of its lines with their newlines."""
    p = parse_trace(lines, ram_block, page_size)
    if not p.syncs:
        raise TraceError(f"trace has no {SYNC_EVENT} event: was the event "
                         f"enabled, and did a migration start?")
    if p.max_page < 0:
        hint = (f" (pages seen only in blocks "
                f"{', '.join(sorted(p.other_blocks))})"
                if p.other_blocks else "")
        raise TraceError(f"trace has no {PAGE_EVENT} of RAM block "
                         f"{p.ram_block.decode(errors='replace')!r}{hint}")
    return p.observations()


def profile_from_trace(lines, ram_block="pc.ram", page_size=4096,
                       total_pages=None, zero_pages=0, metadata=None):
    """The :class:`DirtyProfile` (maximum-likelihood page rates) of a trace;
    ``total_pages`` defaults to the pages seen (highest index + 1)."""
    obs, tau, seen = observations_from_trace(lines, ram_block, page_size)
    if not obs:
        raise TraceError("trace has no complete round after the first pass: "
                         "let the migration run for more rounds")
    total = seen if total_pages is None else int(total_pages)
    if total > MAX_PAGES:
        raise TraceError(f"total_pages {total} is beyond the {MAX_PAGES} "
                         f"pages a per-page capture holds "
                         f"({bounds.TRACED_PAGES.why})")
    if total < seen:
        raise TraceError(f"total_pages {total} is below the pages seen in "
                         f"the trace ({seen})")
    meta = {"source": "qemu-trace", "ram_block": str(ram_block)}
    meta.update(metadata or {})
    return DirtyProfile.from_observations(obs, tau, total, page_size,
                                          zero_pages, meta)
