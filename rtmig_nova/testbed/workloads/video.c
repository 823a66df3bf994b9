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
 *   rtmig.dest=IPV4      send every frame as UDP datagrams to this
 *                        address once it is written (default: none)
 *   rtmig.port=5004      their destination port
 *   rtmig.stream=16K     bytes of datagram payload per frame (16K at
 *                        25 frames/s: 3.3 Mbit/s, a compressed SD stream)
 *   rtmig.packet=1200    payload bytes per datagram, header included
 *
 * A datagram (struct datagram, little-endian, then filler up to
 * rtmig.packet bytes) carries the frame number, its index within the
 * frame and the frame's datagram count, the frame's release time and the
 * time it was sent (the guest's CLOCK_MONOTONIC, ns).  Sends do not block:
 * a datagram the guest's socket cannot take at once is counted as
 * dropped, so a congested network never delays the frame writer.
 *
 * Output: "rtmig-config video ..." once, then every second
 *   rtmig-workload video frames=N misses=M max_lateness_us=X t=S lost=L
 *                        [sent=D dropped=E]
 * (frames written, deadline misses and the largest lateness, in
 * microseconds, all since the start; S seconds; L the pages found not
 * holding what was last written to them, since the start: the integrity
 * check, 0 unless memory lost writes; D and E the datagrams sent and
 * dropped at the guest's socket, with rtmig.dest).
 */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const char *const known[] = {
    "width", "height", "frame", "ring", "mem", "meta", "period_us",
    "duration", "check", "dest", "port", "stream", "packet", NULL
};

#define DATAGRAM_MAGIC 0x564d5452u        /* "RTMV" */
#define DATAGRAM_MAX 65507                /* UDP over IPv4 */

struct datagram {
    uint32_t magic;
    uint16_t index;         /* 0 .. count - 1 */
    uint16_t count;         /* datagrams of this frame */
    uint64_t frame;
    uint64_t release_ns;
    uint64_t sent_ns;
} __attribute__((packed));

struct stream {
    int fd;
    struct sockaddr_in to;
    uint64_t per_frame, size, sent, dropped;
    unsigned char *buf;
    char dest[INET_ADDRSTRLEN + 1];
};

static void stream_open(struct stream *st)
{
    /* param_str's buffer is reused by the next lookup: copy it first */
    const char *dest = param_str("dest");
    uint64_t bytes;

    st->fd = -1;
    st->sent = st->dropped = 0;
    if (!dest)
        return;
    snprintf(st->dest, sizeof(st->dest), "%s", dest);
    bytes = param_size("stream", 16 << 10);
    st->size = param_size("packet", 1200);
    if (st->size < sizeof(struct datagram) || st->size > DATAGRAM_MAX)
        die("rtmig.packet must be %zu to %d bytes",
            sizeof(struct datagram), DATAGRAM_MAX);
    st->per_frame = (bytes + st->size - 1) / st->size;
    if (st->per_frame == 0)
        st->per_frame = 1;
    if (st->per_frame > 65535)
        die("rtmig.stream / rtmig.packet: at most 65535 datagrams a frame");
    memset(&st->to, 0, sizeof(st->to));
    st->to.sin_family = AF_INET;
    st->to.sin_port = htons((uint16_t)param_u64("port", 5004));
    if (inet_pton(AF_INET, st->dest, &st->to.sin_addr) != 1)
        die("rtmig.dest=%s: not an IPv4 address", st->dest);
    st->fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (st->fd < 0)
        die("socket: %s", strerror(errno));
    st->buf = calloc(1, st->size);
    if (!st->buf)
        die("out of memory");
}

static void stream_frame(struct stream *st, uint64_t k, uint64_t release)
{
    struct datagram *d = (struct datagram *)st->buf;
    uint64_t i;

    if (st->fd < 0)
        return;
    for (i = 0; i < st->per_frame; i++) {
        d->magic = DATAGRAM_MAGIC;
        d->index = (uint16_t)i;
        d->count = (uint16_t)st->per_frame;
        d->frame = k;
        d->release_ns = release;
        d->sent_ns = now_ns();
        if (sendto(st->fd, st->buf, st->size, MSG_DONTWAIT,
                   (const struct sockaddr *)&st->to, sizeof(st->to)) < 0)
            st->dropped++;
        else
            st->sent++;
    }
}

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
    struct stream st;

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
    stream_open(&st);

    frames = alloc_touched(frame * ring);
    if (meta)
        metablk = alloc_touched(meta);
    printf("rtmig-config video frame=%llu ring=%llu meta=%llu "
           "period_us=%llu mem=%llu base=%p meta_base=%p\n",
           (unsigned long long)frame, (unsigned long long)ring,
           (unsigned long long)meta, (unsigned long long)(period / 1000),
           (unsigned long long)(frame * ring + meta), (void *)frames,
           (void *)metablk);
    if (st.fd >= 0)
        printf("rtmig-config video-stream dest=%s port=%u datagrams=%llu "
               "packet=%llu\n", st.dest,
               (unsigned)ntohs(st.to.sin_port),
               (unsigned long long)st.per_frame,
               (unsigned long long)st.size);

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
        stream_frame(&st, k, release);
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
            if (st.fd >= 0)
                printf(" sent=%llu dropped=%llu",
                       (unsigned long long)st.sent,
                       (unsigned long long)st.dropped);
            putchar('\n');
            report += NSEC_PER_SEC;
            if (duration && seconds >= duration)
                return 0;
        }
    }
}
