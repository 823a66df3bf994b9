/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rtmig-uniform: uniform random page writer (rtmig-nova guest workload).
 *
 * Maps and touches a working set of rtmig.mem bytes, then writes
 * rtmig.rate random non-zero 8-byte words per second, each to a random
 * 8-byte aligned offset of a page chosen uniformly over the working set,
 * in batches every rtmig.batch_us microseconds paced by clock_nanosleep
 * (absolute time).  Every page is thus its own Poisson-like writer with
 * rate rtmig.rate / pages writes/s, the model's uniform profile.
 *
 * Parameters (kernel command line, or argv[1]; see common.h):
 *   rtmig.mem=64M        working set, bytes (K/M/G suffixes)
 *   rtmig.rate=10000     writes/s over the whole working set
 *   rtmig.batch_us=5000  pacing period, microseconds
 *   rtmig.seed=1         PRNG seed
 *   rtmig.duration=0     seconds to run, 0 = forever
 *   rtmig.check=1        the integrity check (0: off; see common.h)
 *   rtmig.switch_s=0     seconds after which rtmig.rate_after writes/s
 *                        replace rtmig.rate (0: never)
 *   rtmig.rate_after=0   writes/s from then on
 *
 * Output: "rtmig-config uniform ..." once, then every second
 *   rtmig-workload uniform writes=N wps=W t=S lost=L
 * (N writes since the start, W in the last second, S seconds, L writes
 * lost: the integrity check, 0 unless memory lost writes).
 */
#include "common.h"

#include <stdio.h>

static const char *const known[] = {
    "mem", "rate", "batch_us", "seed", "duration", "switch_s",
    "rate_after", "check", NULL
};

static uint64_t pick_uniform(void *ctx, uint64_t *rng)
{
    return rng_below(rng, *(const uint64_t *)ctx);
}

int main(int argc, char **argv)
{
    struct writer_cfg c = { .name = "uniform", .pick = pick_uniform };
    uint64_t mem, ps = page_size();

    params_init(argc, argv);
    params_check(known);
    mem = param_size("mem", 64ULL << 20);
    c.rate = param_u64("rate", 10000);
    c.batch_ns = param_u64("batch_us", 5000) * 1000;
    c.seed = param_u64("seed", 1);
    c.duration_s = param_u64("duration", 0);
    c.check = param_u64("check", 1) != 0;
    c.switch_s = param_u64("switch_s", 0);
    c.rate_after = param_u64("rate_after", 0);
    c.npages = mem / ps;
    if (c.npages == 0 || c.batch_ns == 0)
        die("rtmig.mem must be at least one page and rtmig.batch_us > 0");
    c.ctx = &c.npages;
    c.mem = alloc_touched(c.npages * ps);
    printf("rtmig-config uniform mem=%llu pages=%llu rate=%llu "
           "batch_us=%llu seed=%llu base=%p\n",
           (unsigned long long)(c.npages * ps),
           (unsigned long long)c.npages, (unsigned long long)c.rate,
           (unsigned long long)(c.batch_ns / 1000),
           (unsigned long long)c.seed, (void *)c.mem);
    run_random_writer(&c);
    return 0;
}
