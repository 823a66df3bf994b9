/* SPDX-License-Identifier: Apache-2.0 */
/* Shared helpers of the rtmig-nova guest workloads; see common.h. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static char cmdline[8192];

void die(const char *fmt, ...)
{
    va_list ap;

    fputs("rtmig-workload: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

void params_init(int argc, char **argv)
{
    if (argc > 1) {
        snprintf(cmdline, sizeof(cmdline), "%s", argv[1]);
    } else {
        FILE *f = fopen("/proc/cmdline", "r");
        size_t n;

        if (!f)
            die("cannot read /proc/cmdline: %s", strerror(errno));
        n = fread(cmdline, 1, sizeof(cmdline) - 1, f);
        cmdline[n] = '\0';
        fclose(f);
    }
    /* Unbuffered-by-line output: the console is read line by line. */
    setvbuf(stdout, NULL, _IOLBF, 0);
}

/* Find "rtmig.KEY=" as a whole word; copy its value into buf. */
static const char *lookup(const char *key, char *buf, size_t len)
{
    size_t klen = strlen(key);
    const char *p = cmdline;

    while (*p) {
        size_t wlen;

        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        wlen = strcspn(p, " \t\n");
        if (wlen > 6 + klen && strncmp(p, "rtmig.", 6) == 0 &&
            strncmp(p + 6, key, klen) == 0 && p[6 + klen] == '=') {
            size_t vlen = wlen - 7 - klen;

            if (vlen >= len)
                die("value of rtmig.%s is too long", key);
            memcpy(buf, p + 7 + klen, vlen);
            buf[vlen] = '\0';
            return buf;
        }
        p += wlen;
    }
    return NULL;
}

void params_check(const char *const *known)
{
    const char *p = cmdline;

    while (*p) {
        size_t wlen, klen;
        const char *const *k;
        int found = 0;

        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        wlen = strcspn(p, " \t\n");
        if (wlen > 6 && strncmp(p, "rtmig.", 6) == 0) {
            klen = strcspn(p + 6, "= \t\n");
            found = klen == strlen("workload") &&
                    strncmp(p + 6, "workload", klen) == 0;
            for (k = known; *k && !found; k++)
                found = strlen(*k) == klen && strncmp(p + 6, *k, klen) == 0;
            if (!found)
                fprintf(stderr, "rtmig-workload: warning: unknown "
                        "parameter %.*s (ignored)\n", (int)wlen, p);
        }
        p += wlen;
    }
}

const char *param_str(const char *key)
{
    static char buf[256];

    return lookup(key, buf, sizeof(buf));
}

static uint64_t parse_u64(const char *key, const char *s, int suffix)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        die("rtmig.%s=%s: not a non-negative integer", key, s);
    if (suffix && *end) {
        unsigned shift = 0;

        switch (*end) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: die("rtmig.%s=%s: bad size suffix", key, s);
        }
        if (v > (UINT64_MAX >> shift))
            die("rtmig.%s=%s: too large", key, s);
        v <<= shift;
        end++;
    }
    if (*end)
        die("rtmig.%s=%s: trailing characters", key, s);
    return v;
}

uint64_t param_size(const char *key, uint64_t def)
{
    const char *s = param_str(key);

    return s ? parse_u64(key, s, 1) : def;
}

uint64_t param_u64(const char *key, uint64_t def)
{
    const char *s = param_str(key);

    return s ? parse_u64(key, s, 0) : def;
}

double param_double(const char *key, double def)
{
    const char *s = param_str(key);
    char *end;
    double v;

    if (!s)
        return def;
    v = strtod(s, &end);
    if (end == s || *end)
        die("rtmig.%s=%s: not a number", key, s);
    return v;
}

uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

void sleep_until_ns(uint64_t t)
{
    struct timespec ts = {
        .tv_sec = (time_t)(t / NSEC_PER_SEC),
        .tv_nsec = (long)(t % NSEC_PER_SEC),
    };

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
           EINTR)
        ;
}

size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

void *alloc_touched(size_t bytes)
{
    void *p;

    if (bytes == 0)
        die("cannot allocate 0 bytes");
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap of %zu bytes failed: %s", bytes, strerror(errno));
    memset(p, 0x5a, bytes);
    return p;
}

/* Writes due ns after the start: rate, then rate_after from switch_s on
 * (a workload whose dirty rate jumps on a timer). */
static uint64_t writes_owed(const struct writer_cfg *c, uint64_t ns)
{
    uint64_t sw = c->switch_s * NSEC_PER_SEC;

    if (!c->switch_s || ns <= sw)
        return (uint64_t)((unsigned __int128)c->rate * ns / NSEC_PER_SEC);
    return (uint64_t)(((unsigned __int128)c->rate * sw +
                       (unsigned __int128)c->rate_after * (ns - sw)) /
                      NSEC_PER_SEC);
}

/* Writes lost since the start: the writes done minus the sum of the page
 * headers, each of which counts the writes to its page.  A page whose
 * newest content did not reach the destination of a migration holds an
 * older header, so the sum falls short by exactly the writes it lost;
 * a stale copy of the counter itself (negative) is a loss too. */
static int64_t lost_writes(const struct writer_cfg *c, uint64_t done)
{
    uint64_t words = page_size() / 8, sum = 0, p;

    for (p = 0; p < c->npages; p++)
        sum += *(volatile uint64_t *)(c->mem + p * words * 8);
    return (int64_t)(done - sum);
}

void run_random_writer(const struct writer_cfg *c)
{
    uint64_t rng = c->seed ? c->seed : 1;
    uint64_t words = page_size() / 8, p;
    uint64_t start, tick, report;
    uint64_t done = 0, last_done = 0, seconds = 0;

    /* Word 0 of every page counts the writes to the page (the record the
     * integrity check sums); the random word is one of the others. */
    for (p = 0; p < c->npages; p++)
        *(uint64_t *)(c->mem + p * words * 8) = 0;
    start = now_ns();
    tick = start;
    report = start + NSEC_PER_SEC;
    for (;;) {
        uint64_t t, owed;

        tick += c->batch_ns;
        sleep_until_ns(tick);
        t = now_ns();
        owed = writes_owed(c, t - start);
        while (done < owed) {
            uint64_t page = c->pick(c->ctx, &rng);
            uint64_t word = 1 + rng_below(&rng, words - 1);   /* pages >= 4 KiB */
            uint64_t *base = (uint64_t *)(c->mem + page * words * 8);

            *(volatile uint64_t *)(base + word) = rng_next(&rng) | 1;
            (*(volatile uint64_t *)base)++;
            done++;
        }
        if (t >= report) {
            seconds++;
            if (c->check)
                printf("rtmig-workload %s writes=%llu wps=%llu t=%llu "
                       "lost=%lld\n", c->name, (unsigned long long)done,
                       (unsigned long long)(done - last_done),
                       (unsigned long long)seconds,
                       (long long)lost_writes(c, done));
            else
                printf("rtmig-workload %s writes=%llu wps=%llu t=%llu\n",
                       c->name, (unsigned long long)done,
                       (unsigned long long)(done - last_done),
                       (unsigned long long)seconds);
            last_done = done;
            report += NSEC_PER_SEC;
            if (c->duration_s && seconds >= c->duration_s)
                return;
        }
        if (t > tick + NSEC_PER_SEC)   /* a long stall: do not spin */
            tick = t;
    }
}
