/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rtmig-zipf: Zipf-distributed random page writer (rtmig-nova guest
 * workload).
 *
 * Like rtmig-uniform (see uniform.c), but the page of each write is drawn
 * from a Zipf law over the working set: the page of popularity rank r
 * (1 = hottest) is written with probability proportional to r^-s.  A table
 * of the cumulative weights is precomputed and each draw is an inverse-CDF
 * lookup (binary search) of a xorshift64* uniform.  Ranks are scattered
 * over the working set by a seeded random permutation, so the hot pages
 * are not all at its start (QEMU sends pages in address order); with
 * rtmig.scatter=0 rank r is page r-1.
 *
 * Parameters (kernel command line, or argv[1]; see common.h):
 *   rtmig.mem=64M        working set, bytes (K/M/G suffixes)
 *   rtmig.rate=10000     writes/s over the whole working set
 *   rtmig.s=1.1          Zipf exponent (>= 0; 0 is uniform)
 *   rtmig.scatter=1      1: permute ranks over pages, 0: rank order
 *   rtmig.batch_us=5000  pacing period, microseconds
 *   rtmig.seed=1         PRNG seed (writes and permutation)
 *   rtmig.duration=0     seconds to run, 0 = forever
 *   rtmig.check=1        the integrity check (0: off; see common.h)
 *
 * Output: "rtmig-config zipf ..." once, then every second
 *   rtmig-workload zipf writes=N wps=W t=S lost=L  (as rtmig-uniform)
 * The tables take 12 bytes per page of the working set, outside it.
 */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const known[] = {
    "mem", "rate", "s", "scatter", "batch_us", "seed", "duration", "check", NULL
};

struct zipf {
    uint64_t n;
    double *cdf;        /* cdf[i]: total weight of ranks 1..i+1 */
    uint32_t *page;     /* page[i]: page of rank i+1 */
};

static uint64_t pick_zipf(void *ctx, uint64_t *rng)
{
    const struct zipf *z = ctx;
    double u = rng_unit(rng) * z->cdf[z->n - 1];
    uint64_t lo = 0, hi = z->n - 1;

    while (lo < hi) {           /* first i with cdf[i] > u */
        uint64_t mid = lo + (hi - lo) / 2;

        if (z->cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return z->page[lo];
}

int main(int argc, char **argv)
{
    struct writer_cfg c = { .name = "zipf", .pick = pick_zipf };
    struct zipf z;
    uint64_t mem, ps = page_size(), i, prng;
    double s, sum = 0;
    int scatter;

    params_init(argc, argv);
    params_check(known);
    mem = param_size("mem", 64ULL << 20);
    c.rate = param_u64("rate", 10000);
    s = param_double("s", 1.1);
    scatter = (int)param_u64("scatter", 1);
    c.batch_ns = param_u64("batch_us", 5000) * 1000;
    c.seed = param_u64("seed", 1);
    c.duration_s = param_u64("duration", 0);
    c.check = param_u64("check", 1) != 0;
    z.n = c.npages = mem / ps;
    if (c.npages == 0 || c.npages > UINT32_MAX || c.batch_ns == 0 || s < 0)
        die("need 1 <= pages <= 2^32, rtmig.batch_us > 0 and rtmig.s >= 0");
    z.cdf = malloc(z.n * sizeof(*z.cdf));
    z.page = malloc(z.n * sizeof(*z.page));
    if (!z.cdf || !z.page)
        die("out of memory for the Zipf tables");
    for (i = 0; i < z.n; i++) {
        sum += pow((double)(i + 1), -s);
        z.cdf[i] = sum;
        z.page[i] = (uint32_t)i;
    }
    prng = (c.seed ? c.seed : 1) ^ 0x9E3779B97F4A7C15ULL;
    for (i = z.n - 1; scatter && i > 0; i--) {   /* Fisher-Yates */
        uint64_t j = rng_below(&prng, i + 1);
        uint32_t t = z.page[i];

        z.page[i] = z.page[j];
        z.page[j] = t;
    }
    c.ctx = &z;
    c.mem = alloc_touched(c.npages * ps);
    printf("rtmig-config zipf mem=%llu pages=%llu rate=%llu s=%g "
           "scatter=%d batch_us=%llu seed=%llu hottest_share=%g base=%p\n",
           (unsigned long long)(c.npages * ps),
           (unsigned long long)c.npages, (unsigned long long)c.rate, s,
           scatter, (unsigned long long)(c.batch_ns / 1000),
           (unsigned long long)c.seed, z.cdf[0] / sum, (void *)c.mem);
    run_random_writer(&c);
    return 0;
}
