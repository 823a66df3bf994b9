/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared helpers of the rtmig-nova guest workloads (video.c, uniform.c,
 * zipf.c): parameters from the kernel command line, monotonic time, memory
 * allocation, a xorshift64* PRNG and the paced random-write loop that
 * uniform and zipf share.
 *
 * Parameters are "rtmig.KEY=VALUE" words of /proc/cmdline, or of argv[1]
 * when a program is run by hand (e.g. on the host):
 *     rtmig-uniform "rtmig.mem=8M rtmig.rate=1000 rtmig.duration=3"
 * Sizes take an optional binary suffix K, M or G (K = 1024 bytes); rates,
 * counts and times are plain decimal numbers.  An unknown rtmig.* key is
 * reported on stderr, then ignored.
 *
 * Every program prints one "rtmig-config NAME key=value ..." line when it
 * starts and one "rtmig-workload NAME key=value ..." status line a second
 * on stdout (the serial console in the guest).
 */
#ifndef RTMIG_COMMON_H
#define RTMIG_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define NSEC_PER_SEC 1000000000ULL

void params_init(int argc, char **argv);
/* Warn about rtmig.* keys not in the NULL-terminated list "known". */
void params_check(const char *const *known);
const char *param_str(const char *key);
uint64_t param_size(const char *key, uint64_t def);
uint64_t param_u64(const char *key, uint64_t def);
double param_double(const char *key, double def);

uint64_t now_ns(void);
void sleep_until_ns(uint64_t t);

/* mmap "bytes" of private anonymous memory and write every byte of it
 * (a non-zero pattern: no page starts out as a zero page). */
void *alloc_touched(size_t bytes);
size_t page_size(void);

void die(const char *fmt, ...) __attribute__((format(printf, 1, 2),
                                              noreturn));

/* xorshift64* (Vigna 2016); the state must not be 0. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, n) by multiply-high (no modulo loop). */
static inline uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(s) * n) >> 64);
}

/* Uniform double in [0, 1). */
static inline double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Page picker of run_random_writer: returns a page index < npages. */
typedef uint64_t (*pick_page_fn)(void *ctx, uint64_t *rng);

/*
 * The paced random-write loop of uniform and zipf: every batch_us wake up
 * (clock_nanosleep, absolute time) and write as many 8-byte words as the
 * rate owes since the start (so the long-run rate is exact even when a
 * wake-up is late), each a random non-zero value at a random 8-byte
 * aligned offset of the page "pick" returns, other than word 0, which
 * counts the writes to its page.  Runs for duration_s seconds, or forever
 * if 0.  With "check", every status line ends in lost=N: the writes the
 * page counters are short of (0 unless memory lost writes, e.g. in a
 * migration), summed over the whole working set once a second.
 */
struct writer_cfg {
    const char *name;
    unsigned char *mem;
    uint64_t npages;
    uint64_t rate;        /* writes/s */
    uint64_t rate_after;  /* writes/s from switch_s on */
    uint64_t switch_s;    /* 0: no switch */
    uint64_t batch_ns;
    uint64_t duration_s;  /* 0: forever */
    uint64_t seed;
    int check;            /* print lost=N (the integrity check) */
    pick_page_fn pick;
    void *ctx;
};
void run_random_writer(const struct writer_cfg *cfg);

#endif
