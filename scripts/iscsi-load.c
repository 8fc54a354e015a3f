/*
 * iscsi-load: the load generator of scripts/benchmark. Logs N sessions in to one or more LUNs
 * (sessions take the URLs in turn), keeps QD READ(16)s or WRITE(16)s of a given size in flight on
 * each for a given time, at random or sequential LBAs, polling every session in one loop of one
 * thread (libiscsi's asynchronous API), and records each I/O's latency (CLOCK_MONOTONIC, from
 * queueing the task to its completion callback) in a log-linear histogram (64 buckets per power
 * of two: within 1.6 %).
 *
 * At the end it prints one JSON object on stdout: I/Os, IOPS, MB/s (10^6 bytes), latency
 * percentiles in µs, the fewest and most I/Os one session completed, and errors (always 0:
 * any SCSI status other than GOOD, a short transfer, a failed login or a lost connection ends
 * the run at once with a message on stderr and exit status 1, since a run that counted errors
 * would not measure what it claims to).
 *
 * With -i (idle) it logs the sessions in, prints {"ready": N} and then only answers the target's
 * NOP-Ins until stdin closes or -t seconds pass, then logs out: scripts/benchmark measures the
 * target's memory per idle session meanwhile.
 *
 * Build: cc -O2 -o iscsi-load iscsi-load.c -liscsi   (needs libiscsi-dev)
 * Usage: iscsi-load [-w] [-s BYTES] [-q DEPTH] [-n SESSIONS] [-t SECONDS] [-S] [-i] [-I INITIATOR] URL...
 *   -w          write (default: read)
 *   -s BYTES    bytes per I/O, a multiple of the LUN's block size; K and M suffixes (default 4K)
 *   -q DEPTH    I/Os in flight per session (default 1)
 *   -n SESSIONS sessions (default 1)
 *   -t SECONDS  length of the run (default 5); with -i, the longest the sessions stay idle
 *   -S          sequential (default: random LBAs aligned to the I/O size); each session walks
 *               its own slice of the LUN
 *   -i          idle: log in, print {"ready": N}, wait (see above), log out
 *   -I NAME     initiator name (default iqn.2026-11.dev.ferry:benchmark); sessions differ by ISID
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include "clock-random.h"

#define SUB_BUCKET_BITS 6
#define SUB_BUCKETS (1 << SUB_BUCKET_BITS)
#define BUCKETS (SUB_BUCKETS * 64)

struct session;

struct slot {
    struct session *session;
    uint64_t started_ns;
};

struct session {
    int index;
    const char *url;
    struct iscsi_context *iscsi;
    int lun;
    uint32_t block_size;
    uint64_t block_count;
    uint32_t blocks_per_io;
    uint64_t first_lba; /* sequential: this session's slice of the LUN */
    uint64_t end_lba;
    uint64_t next_lba;
    int in_flight;
    uint64_t completed;
    struct slot *slots;
    unsigned char *buffer; /* the payload of every write, or where every read lands */
    struct scsi_iovec iov;
};

static struct {
    int write;
    uint32_t io_bytes;
    int depth;
    int sessions;
    int seconds;
    int sequential;
    int idle;
    const char *initiator;
    uint64_t deadline_ns;
    int stopping;
    uint64_t histogram[BUCKETS];
    uint64_t last_completion_ns;
    uint64_t rng;
} run = {
    .io_bytes = 4096,
    .depth = 1,
    .sessions = 1,
    .seconds = 5,
    .initiator = "iqn.2026-11.dev.ferry:benchmark",
};

static uint64_t next_random(void) { return xorshift64star(&run.rng); }

static void fail(struct session *session, const char *format, const char *detail) {
    fprintf(stderr, "iscsi-load: session %d (%s): ", session->index, session->url);
    fprintf(stderr, format, detail);
    fprintf(stderr, "\n");
    exit(1);
}

static int bucket_of(uint64_t ns) {
    if (ns < SUB_BUCKETS) return (int)ns;
    int exponent = 63 - __builtin_clzll(ns); /* >= SUB_BUCKET_BITS */
    int bucket = (exponent - SUB_BUCKET_BITS + 1) * SUB_BUCKETS + (int)((ns >> (exponent - SUB_BUCKET_BITS)) & (SUB_BUCKETS - 1));
    return bucket < BUCKETS ? bucket : BUCKETS - 1;
}

/* The middle of a bucket, in ns. */
static double bucket_value(int bucket) {
    if (bucket < SUB_BUCKETS) return bucket;
    int exponent = bucket / SUB_BUCKETS + SUB_BUCKET_BITS - 1;
    uint64_t width = 1ull << (exponent - SUB_BUCKET_BITS);
    uint64_t low = (1ull << exponent) + (uint64_t)(bucket % SUB_BUCKETS) * width;
    return (double)low + (double)width / 2;
}

static double percentile_us(uint64_t total, double fraction) {
    uint64_t rank = (uint64_t)(fraction * (double)total + 0.999999);
    if (rank == 0) rank = 1;
    uint64_t seen = 0;
    for (int bucket = 0; bucket < BUCKETS; bucket++) {
        seen += run.histogram[bucket];
        if (seen >= rank) return bucket_value(bucket) / 1000;
    }
    return 0;
}

static void submit(struct slot *slot);

static void completed(struct iscsi_context *iscsi, int status, void *command_data, void *private_data) {
    struct slot *slot = private_data;
    struct session *session = slot->session;
    struct scsi_task *task = command_data;
    uint64_t now = now_ns();
    if (status != SCSI_STATUS_GOOD) {
        char detail[512];
        if (status == SCSI_STATUS_CHECK_CONDITION && task != NULL) {
            snprintf(detail, sizeof detail, "CHECK CONDITION, %s, %s", scsi_sense_key_str(task->sense.key),
                scsi_sense_ascq_str(task->sense.ascq));
        } else if (status == SCSI_STATUS_CANCELLED || status == SCSI_STATUS_ERROR) {
            snprintf(detail, sizeof detail, "%s (the connection failed or was closed): %s",
                status == SCSI_STATUS_CANCELLED ? "cancelled" : "error", iscsi_get_error(iscsi));
        } else {
            snprintf(detail, sizeof detail, "SCSI status 0x%x", (unsigned)status);
        }
        fail(session, run.write ? "WRITE(16) failed: %s" : "READ(16) failed: %s", detail);
    }
    if (task->residual_status != SCSI_RESIDUAL_NO_RESIDUAL && task->residual != 0) {
        char detail[64];
        snprintf(detail, sizeof detail, "%zu bytes", task->residual);
        fail(session, run.write ? "WRITE(16) transferred too little: residual %s" :
            "READ(16) transferred too little: residual %s", detail);
    }
    scsi_free_scsi_task(task);
    run.histogram[bucket_of(now - slot->started_ns)]++;
    run.last_completion_ns = now;
    session->in_flight--;
    session->completed++;
    if (now >= run.deadline_ns) run.stopping = 1;
    if (!run.stopping) submit(slot);
}

static void submit(struct slot *slot) {
    struct session *session = slot->session;
    uint64_t lba;
    if (run.sequential) {
        if (session->next_lba + session->blocks_per_io > session->end_lba) session->next_lba = session->first_lba;
        lba = session->next_lba;
        session->next_lba += session->blocks_per_io;
    } else {
        lba = (next_random() % (session->block_count / session->blocks_per_io)) * session->blocks_per_io;
    }
    struct scsi_task *task;
    slot->started_ns = now_ns();
    if (run.write) {
        task = iscsi_write16_task(session->iscsi, session->lun, lba, session->buffer, run.io_bytes,
            (int)session->block_size, 0, 0, 0, 0, 0, completed, slot);
    } else {
        task = iscsi_read16_iov_task(session->iscsi, session->lun, lba, run.io_bytes, (int)session->block_size,
            0, 0, 0, 0, 0, completed, slot, &session->iov, 1);
    }
    if (task == NULL) fail(session, "cannot queue the command: %s", iscsi_get_error(session->iscsi));
    session->in_flight++;
}

static void connect_session(struct session *session) {
    session->iscsi = iscsi_create_context(run.initiator);
    if (session->iscsi == NULL) fail(session, "%s", "cannot create a libiscsi context");
    struct iscsi_url *url = iscsi_parse_full_url(session->iscsi, session->url);
    if (url == NULL) fail(session, "bad URL: %s", iscsi_get_error(session->iscsi));
    /* One process, many sessions: a random ISID per run and a qualifier per session. */
    iscsi_set_isid_random(session->iscsi, (uint32_t)(run.rng & 0xffffff), (uint32_t)session->index);
    iscsi_set_targetname(session->iscsi, url->target);
    iscsi_set_session_type(session->iscsi, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(session->iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
    /* A lost connection must end the run, not be reconnected behind its back. */
    iscsi_set_noautoreconnect(session->iscsi, 1);
    if (iscsi_full_connect_sync(session->iscsi, url->portal, url->lun) != 0) {
        fail(session, "login failed: %s", iscsi_get_error(session->iscsi));
    }
    session->lun = url->lun;
    iscsi_destroy_url(url);

    struct scsi_task *task = iscsi_readcapacity16_sync(session->iscsi, session->lun);
    struct scsi_readcapacity16 *capacity = task && task->status == SCSI_STATUS_GOOD ? scsi_datain_unmarshall(task) : NULL;
    if (capacity == NULL) fail(session, "READ CAPACITY(16) failed: %s", iscsi_get_error(session->iscsi));
    session->block_size = capacity->block_length;
    session->block_count = capacity->returned_lba + 1;
    scsi_free_scsi_task(task);
    if (session->block_size == 0 || run.io_bytes % session->block_size != 0) {
        fail(session, "%s", "the I/O size is not a multiple of the LUN's block size");
    }
    session->blocks_per_io = run.io_bytes / session->block_size;
    if (session->block_count < session->blocks_per_io) fail(session, "%s", "the LUN is smaller than one I/O");
    uint64_t ios = session->block_count / session->blocks_per_io;
    uint64_t slice = ios / (uint64_t)run.sessions;
    if (slice == 0) slice = ios;
    session->first_lba = (slice * (uint64_t)session->index % ios) * session->blocks_per_io;
    session->end_lba = session->first_lba + slice * session->blocks_per_io;
    session->next_lba = session->first_lba;

    session->buffer = malloc(run.io_bytes);
    if (session->buffer == NULL) fail(session, "%s", "out of memory");
    for (uint32_t i = 0; i < run.io_bytes; i++) session->buffer[i] = (unsigned char)(i * 7 + (uint32_t)session->index);
    session->iov.iov_base = session->buffer;
    session->iov.iov_len = run.io_bytes;
    session->slots = calloc((size_t)run.depth, sizeof *session->slots);
    if (session->slots == NULL) fail(session, "%s", "out of memory");
    for (int i = 0; i < run.depth; i++) session->slots[i].session = session;
}

static uint32_t parse_size(const char *text) {
    char *end;
    unsigned long long value = strtoull(text, &end, 10);
    if (*end == 'k' || *end == 'K') { value <<= 10; end++; }
    else if (*end == 'm' || *end == 'M') { value <<= 20; end++; }
    if (*end != '\0' || value == 0 || value > (16u << 20)) {
        fprintf(stderr, "iscsi-load: bad I/O size %s\n", text);
        exit(2);
    }
    return (uint32_t)value;
}

static void usage(const char *name) {
    fprintf(stderr, "usage: %s [-w] [-s BYTES] [-q DEPTH] [-n SESSIONS] [-t SECONDS] [-S] [-i] [-I INITIATOR] URL...\n",
        name);
    exit(2);
}

/* Services every session whose socket is ready (and all of them every 100 ms, for libiscsi's
   timers). With watch_stdin, returns 1 once stdin has closed. */
static int service(struct session *sessions, struct pollfd *fds, int watch_stdin) {
    int count = run.sessions;
    for (int i = 0; i < count; i++) {
        fds[i].fd = iscsi_get_fd(sessions[i].iscsi);
        fds[i].events = (short)iscsi_which_events(sessions[i].iscsi);
        fds[i].revents = 0;
    }
    if (watch_stdin) {
        fds[count].fd = STDIN_FILENO;
        fds[count].events = POLLIN;
        fds[count].revents = 0;
    }
    int ready = poll(fds, (nfds_t)(count + (watch_stdin ? 1 : 0)), 100);
    if (ready < 0) {
        if (errno == EINTR) return 0;
        perror("iscsi-load: poll");
        exit(1);
    }
    for (int i = 0; i < count; i++) {
        if (ready == 0 || fds[i].revents != 0) {
            if (iscsi_service(sessions[i].iscsi, fds[i].revents) < 0) {
                fail(&sessions[i], "connection failed: %s", iscsi_get_error(sessions[i].iscsi));
            }
        }
    }
    if (watch_stdin && fds[count].revents != 0) {
        char scratch[256];
        if (read(STDIN_FILENO, scratch, sizeof scratch) <= 0) return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    int c;
    while ((c = getopt(argc, argv, "ws:q:n:t:SiI:")) != -1) {
        switch (c) {
        case 'w': run.write = 1; break;
        case 's': run.io_bytes = parse_size(optarg); break;
        case 'q': run.depth = atoi(optarg); break;
        case 'n': run.sessions = atoi(optarg); break;
        case 't': run.seconds = atoi(optarg); break;
        case 'S': run.sequential = 1; break;
        case 'i': run.idle = 1; break;
        case 'I': run.initiator = optarg; break;
        default: usage(argv[0]);
        }
    }
    if (optind >= argc || run.depth < 1 || run.sessions < 1 || run.seconds < 1) usage(argv[0]);
    run.rng = (now_ns() ^ ((uint64_t)getpid() << 32)) | 1;

    struct session *sessions = calloc((size_t)run.sessions, sizeof *sessions);
    struct pollfd *fds = calloc((size_t)run.sessions + 1, sizeof *fds);
    if (sessions == NULL || fds == NULL) {
        fprintf(stderr, "iscsi-load: out of memory\n");
        return 1;
    }
    int urls = argc - optind;
    for (int i = 0; i < run.sessions; i++) {
        sessions[i].index = i;
        sessions[i].url = argv[optind + i % urls];
        connect_session(&sessions[i]);
    }

    if (run.idle) {
        printf("{\"ready\": %d}\n", run.sessions);
        fflush(stdout);
        uint64_t until = now_ns() + (uint64_t)run.seconds * 1000000000u;
        while (now_ns() < until && !service(sessions, fds, 1)) {}
    } else {
        uint64_t start = now_ns();
        run.deadline_ns = start + (uint64_t)run.seconds * 1000000000u;
        run.last_completion_ns = start;
        for (int i = 0; i < run.sessions; i++) {
            for (int j = 0; j < run.depth; j++) submit(&sessions[i].slots[j]);
        }
        int in_flight = run.sessions * run.depth;
        while (in_flight > 0) {
            service(sessions, fds, 0);
            if (now_ns() > run.deadline_ns + 30000000000ull) {
                fprintf(stderr, "iscsi-load: %d I/Os still in flight 30 s after the end of the run\n", in_flight);
                return 1;
            }
            if (!run.stopping && now_ns() >= run.deadline_ns) run.stopping = 1;
            in_flight = 0;
            for (int i = 0; i < run.sessions; i++) in_flight += sessions[i].in_flight;
        }

        uint64_t total = 0, fewest = UINT64_MAX, most = 0;
        for (int i = 0; i < run.sessions; i++) {
            total += sessions[i].completed;
            if (sessions[i].completed < fewest) fewest = sessions[i].completed;
            if (sessions[i].completed > most) most = sessions[i].completed;
        }
        double elapsed = (double)(run.last_completion_ns - start) / 1e9;
        double iops = elapsed > 0 ? (double)total / elapsed : 0;
        double mean_us = 0;
        for (int bucket = 0; bucket < BUCKETS; bucket++) mean_us += (double)run.histogram[bucket] * bucket_value(bucket);
        mean_us = total ? mean_us / (double)total / 1000 : 0;
        int max_bucket = 0;
        for (int bucket = 0; bucket < BUCKETS; bucket++) if (run.histogram[bucket]) max_bucket = bucket;
        printf("{\"op\": \"%s\", \"io_bytes\": %" PRIu32 ", \"queue_depth\": %d, \"sessions\": %d, \"sequential\": %s, "
            "\"seconds\": %.3f, \"ios\": %" PRIu64 ", \"iops\": %.1f, \"mb_per_s\": %.2f, "
            "\"latency_us\": {\"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p99.9\": %.1f, \"max\": %.1f}, "
            "\"session_ios_min\": %" PRIu64 ", \"session_ios_max\": %" PRIu64 ", \"errors\": 0}\n",
            run.write ? "write" : "read", run.io_bytes, run.depth, run.sessions, run.sequential ? "true" : "false",
            elapsed, total, iops, iops * run.io_bytes / 1e6, mean_us,
            percentile_us(total, 0.50), percentile_us(total, 0.90), percentile_us(total, 0.99),
            percentile_us(total, 0.999), total ? bucket_value(max_bucket) / 1000 : 0.0, fewest, most);
        fflush(stdout);
    }

    for (int i = 0; i < run.sessions; i++) {
        if (iscsi_logout_sync(sessions[i].iscsi) != 0) {
            fail(&sessions[i], "logout failed: %s", iscsi_get_error(sessions[i].iscsi));
        }
        iscsi_destroy_context(sessions[i].iscsi);
        free(sessions[i].buffer);
        free(sessions[i].slots);
    }
    free(sessions);
    free(fds);
    return 0;
}
