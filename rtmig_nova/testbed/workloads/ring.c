/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rtmig-ring: sequential log writer with hot counters (rtmig-nova guest
 * workload): a write-ahead log, a frame ring or a trace buffer.
 *
 * Maps and touches a ring of rtmig.mem bytes and rtmig.hot counter pages.
 * Every rtmig.batch_us microseconds (clock_nanosleep, absolute time) it
 * appends the records the rate owes since the start: rtmig.rate records/s
 * of rtmig.record bytes each, written one after the other through the
 * ring, which wraps at its end; after each batch it updates every counter
 * page.  A ring page is thus rewritten once per lap, every
 * mem / (rate * record) seconds: a periodic writer, not a Poisson one (a
 * page is dirty in an interval d with probability min(d / P, 1), not
 * 1 - exp(-d / P)); the counter pages are written every batch.
 *
 * Parameters (kernel command line, or argv[1]; see common.h):
 *   rtmig.mem=16M        ring, bytes (K/M/G suffixes), at least one page
 *   rtmig.rate=1000      records/s
 *   rtmig.record=512     bytes per record (8 to one page, a multiple of 8)
 *   rtmig.hot=4          counter pages (0: none)
 *   rtmig.batch_us=5000  pacing period, microseconds
 *   rtmig.duration=0     seconds to run, 0 = forever
 *   rtmig.check=1        the integrity check (0: off)
 *
 * Every record carries its sequence number in its first word, so the ring
 * holds the newest lap's records behind the write position and the lap
 * before's ahead of it.  The integrity check: once a second, the records
 * whose sequence number is not the one the position says (each counted
 * once: it is then put right); before each batch, the counter pages that
 * do not hold the records written.  0 unless memory lost writes, e.g. in
 * a migration.
 *
 * Output: "rtmig-config ring ..." once, then every second
 *   rtmig-workload ring records=N rps=R laps=L t=S lost=X
 * (N records since the start, R in the last second, L laps of the ring,
 * S seconds, X records or counter pages found stale since the start).
 */
#include "common.h"

#include <stdio.h>

static const char *const known[] = {
    "mem", "rate", "record", "hot", "batch_us", "duration", "check", NULL
};

int main(int argc, char **argv)
{
    uint64_t mem, rate, record, hot, batch_ns, duration, check, ps;
    uint64_t slots, done = 0, last_done = 0, seconds = 0, lost = 0, h;
    uint64_t start, tick, report;
    unsigned char *ring, *counters = NULL;

    params_init(argc, argv);
    params_check(known);
    ps = page_size();
    mem = param_size("mem", 16ULL << 20);
    rate = param_u64("rate", 1000);
    record = param_size("record", 512);
    hot = param_u64("hot", 4);
    batch_ns = param_u64("batch_us", 5000) * 1000;
    duration = param_u64("duration", 0);
    check = param_u64("check", 1);
    if (record < 8 || record > ps || record % 8 || mem < ps ||
        batch_ns == 0 || hot > 1024)
        die("need 8 <= rtmig.record <= page size (a multiple of 8), "
            "rtmig.mem >= one page, rtmig.batch_us > 0, rtmig.hot <= 1024");
    slots = mem / record;
    ring = alloc_touched(slots * record);
    if (hot)
        counters = alloc_touched(hot * ps);
    for (h = 0; h < hot; h++)
        *(uint64_t *)(counters + h * ps) = 0;
    printf("rtmig-config ring mem=%llu slots=%llu rate=%llu record=%llu "
           "hot=%llu batch_us=%llu lap_s=%g base=%p hot_base=%p\n",
           (unsigned long long)(slots * record), (unsigned long long)slots,
           (unsigned long long)rate, (unsigned long long)record,
           (unsigned long long)hot, (unsigned long long)(batch_ns / 1000),
           rate ? (double)slots / (double)rate : 0.0, (void *)ring,
           (void *)counters);
    start = now_ns();
    tick = start;
    report = start + NSEC_PER_SEC;
    for (;;) {
        uint64_t t, owed;

        tick += batch_ns;
        sleep_until_ns(tick);
        t = now_ns();
        owed = (uint64_t)((unsigned __int128)rate * (t - start) /
                          NSEC_PER_SEC);
        if (owed > done) {
            /* the counters, before this batch rewrites them */
            for (h = 0; check && h < hot; h++)
                lost += *(volatile uint64_t *)(counters + h * ps) != done;
            while (done < owed) {
                uint64_t *r = (uint64_t *)(ring + (done % slots) * record);
                uint64_t w;

                /* sequence number + 1: the touched ring is not 0 */
                *(volatile uint64_t *)r = done + 1;
                for (w = 1; w < record / 8; w++)
                    ((volatile uint64_t *)r)[w] = done ^ w;
                done++;
            }
            for (h = 0; h < hot; h++)
                *(volatile uint64_t *)(counters + h * ps) = done;
        }
        if (t >= report) {
            seconds++;
            if (check) {
                uint64_t s;

                /* slot s holds the newest record n < done with
                 * n = s mod slots (none: alloc_touched's fill) */
                for (s = 0; s < slots; s++) {
                    uint64_t got = *(volatile uint64_t *)(ring + s * record);
                    uint64_t want;

                    if (s >= done)
                        want = 0x5a5a5a5a5a5a5a5aULL;
                    else
                        want = done - 1 - (done - 1 - s) % slots + 1;
                    if (got != want) {
                        lost++;
                        /* counted once: the slot is made what it should
                         * hold (its other words are not checked) */
                        *(volatile uint64_t *)(ring + s * record) = want;
                    }
                }
                printf("rtmig-workload ring records=%llu rps=%llu laps=%llu "
                       "t=%llu lost=%llu\n", (unsigned long long)done,
                       (unsigned long long)(done - last_done),
                       (unsigned long long)(done / slots),
                       (unsigned long long)seconds, (unsigned long long)lost);
            } else {
                printf("rtmig-workload ring records=%llu rps=%llu laps=%llu "
                       "t=%llu\n", (unsigned long long)done,
                       (unsigned long long)(done - last_done),
                       (unsigned long long)(done / slots),
                       (unsigned long long)seconds);
            }
            last_done = done;
            report += NSEC_PER_SEC;
            if (duration && seconds >= duration)
                return 0;
        }
        if (t > tick + NSEC_PER_SEC)   /* a long stall: do not spin */
            tick = t;
    }
}
