/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rtmig-video: periodic frame writer, a video server's memory behaviour
 * (rtmig-nova guest workload).
 *
 * Maps and touches a ring of rtmig.ring frame buffers of one frame each
 * plus a metadata block of rtmig.meta bytes.  Frame k is released at
 * start + k * period (clock_nanosleep, absolute time): the program writes
 * all of it (a memset with a value that changes every frame) into ring
 * slot k mod ring, then updates a record at the start of every page of the
 * metadata block (frame number, release time, slot), so those pages are
 * written every period.  Frame k misses its deadline when it is not
 * completely written by start + (k + 1) * period; its lateness is the time
 * by which it finished after that.  A late frame is not skipped: the next
 * one starts at once if its release time has passed.
 *
 * Parameters (kernel command line, or argv[1]; see common.h):
 *   rtmig.width=1920 rtmig.height=1080  frame of width*height*3/2 bytes
 *                                       (YUV 4:2:0: 3,110,400 bytes)
 *   rtmig.frame=BYTES    frame size, overrides width/height (K/M/G)
 *   rtmig.ring=8         frame buffers in the ring
 *   rtmig.mem=BYTES      without rtmig.ring: ring = mem / frame (>= 1)
 *   rtmig.meta=16K       metadata block, bytes (0: none)
 *   rtmig.period_us=40000  frame period, microseconds (25 frames/s)
 *   rtmig.duration=0     seconds to run, 0 = forever
 *   rtmig.check=1        the integrity check (0: off)
 *
 * Output: "rtmig-config video ..." once, then every second
 *   rtmig-workload video frames=N misses=M max_lateness_us=X t=S lost=L
 * (frames written, deadline misses and the largest lateness, in
 * microseconds, all since the start; S seconds; L the pages found not
 * holding what was last written to them, since the start: the integrity
 * check, 0 unless memory lost writes).
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

static const char *const known[] = {
    "width", "height", "frame", "ring", "mem", "meta", "period_us",
    "duration", "check", NULL
};

struct meta_record {
    uint64_t frame;
    uint64_t release_ns;
    uint64_t slot;
    uint64_t misses;
};

/* The integrity check, before frame k overwrites slot k mod ring: the
 * pages of that slot that do not hold frame k - ring (fill byte
 * (k - ring) mod 255 + 1, or alloc_touched's 0x5a while k < ring) and the
 * metadata pages that do not hold frame k - 1.  Every page is thus
 * checked before it is rewritten, so a loss (e.g. in a migration) is seen
 * even though the ring soon overwrites it; one byte per page is read. */
static uint64_t stale_pages(const unsigned char *slot, uint64_t frame,
                            const unsigned char *metablk, uint64_t meta,
                            uint64_t k, uint64_t ring, uint64_t ps)
{
    const volatile unsigned char *f = slot;
    unsigned char want = k < ring ? 0x5a
                                  : (unsigned char)((k - ring) % 255 + 1);
    uint64_t off, bad = 0;

    for (off = 0; off < frame; off += ps)
        bad += f[off] != want;
    /* the last byte, where it is in a page of its own past the samples */
    if (((uintptr_t)(slot + frame - 1) / ps) !=
        ((uintptr_t)(slot + (frame - 1) / ps * ps) / ps))
        bad += f[frame - 1] != want;
    for (off = 0; k && off + sizeof(struct meta_record) <= meta; off += ps)
        bad += ((const volatile struct meta_record *)(metablk + off))
                   ->frame != k - 1;
    return bad;
}

int main(int argc, char **argv)
{
    uint64_t width, height, frame, ring, meta, period, duration;
    uint64_t ps = page_size(), k, misses = 0, max_late = 0, seconds = 0;
    uint64_t start, report, check, lost = 0;
    unsigned char *frames, *metablk = NULL;

    params_init(argc, argv);
    params_check(known);
    width = param_u64("width", 1920);
    height = param_u64("height", 1080);
    frame = param_size("frame", width * height * 3 / 2);
    ring = param_u64("ring", 0);
    if (ring == 0 && frame)
        ring = param_str("mem") ? param_size("mem", 0) / frame : 8;
    if (ring == 0)
        ring = 1;
    meta = param_size("meta", 16 << 10);
    period = param_u64("period_us", 40000) * 1000;
    duration = param_u64("duration", 0);
    check = param_u64("check", 1);
    if (frame == 0 || period == 0)
        die("frame size and rtmig.period_us must be > 0");

    frames = alloc_touched(frame * ring);
    if (meta)
        metablk = alloc_touched(meta);
    printf("rtmig-config video frame=%llu ring=%llu meta=%llu "
           "period_us=%llu mem=%llu base=%p meta_base=%p\n",
           (unsigned long long)frame, (unsigned long long)ring,
           (unsigned long long)meta, (unsigned long long)(period / 1000),
           (unsigned long long)(frame * ring + meta), (void *)frames,
           (void *)metablk);

    start = now_ns();
    report = start + NSEC_PER_SEC;
    for (k = 0;; k++) {
        uint64_t release = start + k * period, done, off;
        uint64_t slot = k % ring;

        sleep_until_ns(release);
        if (check)
            lost += stale_pages(frames + slot * frame, frame, metablk, meta,
                                k, ring, ps);
        memset(frames + slot * frame, (int)(k % 255) + 1, frame);
        for (off = 0; off < meta; off += ps) {
            struct meta_record r = { k, release, slot, misses };

            if (meta - off >= sizeof(r))
                memcpy(metablk + off, &r, sizeof(r));
        }
        __asm__ __volatile__("" ::: "memory");
        done = now_ns();
        if (done > release + period) {
            uint64_t late = (done - release - period) / 1000;

            misses++;
            if (late > max_late)
                max_late = late;
        }
        if (done >= report) {
            seconds++;
            printf("rtmig-workload video frames=%llu misses=%llu "
                   "max_lateness_us=%llu t=%llu",
                   (unsigned long long)(k + 1), (unsigned long long)misses,
                   (unsigned long long)max_late,
                   (unsigned long long)seconds);
            if (check)
                printf(" lost=%llu", (unsigned long long)lost);
            putchar('\n');
            report += NSEC_PER_SEC;
            if (duration && seconds >= duration)
                return 0;
        }
    }
}
