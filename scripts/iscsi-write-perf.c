/*
 * iscsi-write-perf: the WRITE(16) counterpart of libiscsi's iscsi-perf (which only reads), for
 * scripts/benchmark. Keeps -m WRITEs of -b blocks in flight for -t seconds, sequentially or at
 * random LBAs (-r), and prints the same final line as iscsi-perf: "iops average N (M MB/s)".
 *
 * Build: cc -O2 -o iscsi-write-perf iscsi-write-perf.c -liscsi   (needs libiscsi-dev)
 * Usage: iscsi-write-perf [-m max_in_flight] [-b blocks_per_io] [-t seconds] [-r] iscsi://host:port/iqn/lun
 */
#include <getopt.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

struct run {
    struct iscsi_context *iscsi;
    int lun;
    int block_size;
    uint64_t block_count;
    int blocks_per_io;
    int max_in_flight;
    int random;
    int in_flight;
    int stopping;
    uint64_t next_lba;
    uint64_t completed;
    uint64_t deadline_ns;
    unsigned char *payload;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fill(struct run *run);

static void written(struct iscsi_context *iscsi, int status, void *command_data, void *private_data) {
    struct run *run = private_data;
    struct scsi_task *task = command_data;
    if (status != SCSI_STATUS_GOOD) {
        fprintf(stderr, "WRITE(16) failed: status %d, %s\n", status, iscsi_get_error(iscsi));
        exit(10);
    }
    scsi_free_scsi_task(task);
    run->in_flight--;
    run->completed++;
    if (now_ns() >= run->deadline_ns) run->stopping = 1;
    fill(run);
}

static void fill(struct run *run) {
    uint64_t ios = run->block_count / (uint64_t)run->blocks_per_io;
    while (!run->stopping && run->in_flight < run->max_in_flight) {
        uint64_t lba;
        if (run->random) {
            lba = ((uint64_t)rand() % ios) * (uint64_t)run->blocks_per_io;
        } else {
            if (run->next_lba + (uint64_t)run->blocks_per_io > run->block_count) run->next_lba = 0;
            lba = run->next_lba;
            run->next_lba += (uint64_t)run->blocks_per_io;
        }
        uint32_t length = (uint32_t)(run->blocks_per_io * run->block_size);
        if (iscsi_write16_task(run->iscsi, run->lun, lba, run->payload, length, run->block_size, 0, 0, 0, 0, 0,
                written, run) == NULL) {
            fprintf(stderr, "cannot queue WRITE(16): %s\n", iscsi_get_error(run->iscsi));
            exit(10);
        }
        run->in_flight++;
    }
}

int main(int argc, char **argv) {
    struct run run;
    memset(&run, 0, sizeof run);
    run.blocks_per_io = 8;
    run.max_in_flight = 32;
    int seconds = 10;
    int c;
    while ((c = getopt(argc, argv, "m:b:t:r")) != -1) {
        switch (c) {
        case 'm': run.max_in_flight = atoi(optarg); break;
        case 'b': run.blocks_per_io = atoi(optarg); break;
        case 't': seconds = atoi(optarg); break;
        case 'r': run.random = 1; break;
        default:
            fprintf(stderr, "usage: %s [-m max_in_flight] [-b blocks_per_io] [-t seconds] [-r] URL\n", argv[0]);
            return 1;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: %s [-m max_in_flight] [-b blocks_per_io] [-t seconds] [-r] URL\n", argv[0]);
        return 1;
    }
    srand((unsigned)time(NULL));
    run.iscsi = iscsi_create_context("iqn.2026-11.dev.ferry:benchmark");
    struct iscsi_url *url = iscsi_parse_full_url(run.iscsi, argv[optind]);
    if (url == NULL) {
        fprintf(stderr, "bad URL: %s\n", iscsi_get_error(run.iscsi));
        return 10;
    }
    iscsi_set_targetname(run.iscsi, url->target);
    iscsi_set_session_type(run.iscsi, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(run.iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
    if (iscsi_full_connect_sync(run.iscsi, url->portal, url->lun) != 0) {
        fprintf(stderr, "login failed: %s\n", iscsi_get_error(run.iscsi));
        return 10;
    }
    run.lun = url->lun;
    iscsi_destroy_url(url);

    struct scsi_task *task = iscsi_readcapacity16_sync(run.iscsi, run.lun);
    struct scsi_readcapacity16 *capacity = task ? scsi_datain_unmarshall(task) : NULL;
    if (task == NULL || task->status != SCSI_STATUS_GOOD || capacity == NULL) {
        fprintf(stderr, "READ CAPACITY(16) failed: %s\n", iscsi_get_error(run.iscsi));
        return 10;
    }
    run.block_size = (int)capacity->block_length;
    run.block_count = capacity->returned_lba + 1;
    scsi_free_scsi_task(task);

    size_t length = (size_t)run.blocks_per_io * (size_t)run.block_size;
    run.payload = malloc(length);
    for (size_t i = 0; i < length; i++) run.payload[i] = (unsigned char)(i * 7);

    uint64_t start = now_ns();
    run.deadline_ns = start + (uint64_t)seconds * 1000000000u;
    fill(&run);
    while (run.in_flight > 0) {
        struct pollfd pfd = { .fd = iscsi_get_fd(run.iscsi), .events = (short)iscsi_which_events(run.iscsi) };
        if (poll(&pfd, 1, 1000) < 0) continue;
        if (iscsi_service(run.iscsi, pfd.revents) < 0) {
            fprintf(stderr, "iscsi_service failed: %s\n", iscsi_get_error(run.iscsi));
            return 10;
        }
    }
    uint64_t elapsed = now_ns() - start;
    uint64_t iops = run.completed * 1000000000u / elapsed;
    printf("iops average %llu (%llu MB/s)\n", (unsigned long long)iops,
        (unsigned long long)((iops * (uint64_t)run.blocks_per_io * (uint64_t)run.block_size) >> 20));
    iscsi_logout_sync(run.iscsi);
    iscsi_destroy_context(run.iscsi);
    free(run.payload);
    return 0;
}
