/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rtmig-burn: a noisy neighbour (rtmig-nova guest workload).
 *
 * Keeps rtmig.threads threads busy computing, each in a loop that touches
 * no memory beyond its own counter, so the guest takes all the CPU its
 * vCPUs get and dirties next to no pages.
 *
 * Parameters (kernel command line, or argv[1]; see common.h):
 *   rtmig.threads=1      busy threads (1 to 64; one per vCPU)
 *   rtmig.duration=0     seconds to run, 0 = forever
 *
 * Output: "rtmig-config burn ..." once, then every second
 *   rtmig-workload burn loops=N lps=L t=S
 * (N loop iterations of all threads since the start, L in the last second:
 * the CPU the guest got, S seconds).
 */
#include "common.h"

#include <pthread.h>
#include <stdio.h>

static const char *const known[] = { "threads", "duration", NULL };

#define MAX_THREADS 64
#define LOOP_BATCH 100000

static volatile uint64_t counts[MAX_THREADS * 8];  /* a cache line each */

static void *spin(void *arg)
{
    volatile uint64_t *mine = &counts[(uintptr_t)arg * 8];
    uint64_t x = 88172645463325252ULL;

    for (;;) {
        for (int i = 0; i < LOOP_BATCH; i++)
            x = rng_next(&x) | 1;
        *mine += LOOP_BATCH + (x == 0);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    uint64_t threads, duration, seconds = 0, last = 0, next;
    pthread_t tid;

    params_init(argc, argv);
    params_check(known);
    threads = param_u64("threads", 1);
    duration = param_u64("duration", 0);
    if (threads < 1 || threads > MAX_THREADS)
        die("rtmig.threads must be 1 to %d", MAX_THREADS);
    printf("rtmig-config burn threads=%llu\n", (unsigned long long)threads);
    for (uint64_t i = 0; i < threads; i++)
        if (pthread_create(&tid, NULL, spin, (void *)(uintptr_t)i))
            die("pthread_create failed");
    next = now_ns() + NSEC_PER_SEC;
    for (;;) {
        uint64_t total = 0;

        sleep_until_ns(next);
        next += NSEC_PER_SEC;
        seconds++;
        for (uint64_t i = 0; i < threads; i++)
            total += counts[i * 8];
        printf("rtmig-workload burn loops=%llu lps=%llu t=%llu\n",
               (unsigned long long)total,
               (unsigned long long)(total - last),
               (unsigned long long)seconds);
        last = total;
        if (duration && seconds >= duration)
            return 0;
    }
}
