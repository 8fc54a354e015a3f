/*
 * io-path: how an event loop best gets 4 KiB random I/O on one file done, measured (issue 12). One
 * thread plays the event loop (epoll_wait on one eventfd, as SwiftNIO's loop does) and keeps QD I/Os
 * in flight on the file through one of three mechanisms:
 *
 *   pool    the loop queues each I/O to worker threads (mutex + condition variable, as NIOThreadPool);
 *           a worker runs pread/pwrite and pushes the completion onto a queue; the first completion
 *           of a batch writes the eventfd, and the loop takes the whole queue: Ferry's two thread hops.
 *   uring   the loop prepares io_uring reads/writes (liburing), submits once per batch, and reaps the
 *           CQEs it finds right after the submit (the kernel completed those inline) or when the
 *           eventfd registered with io_uring_register_eventfd wakes its epoll_wait.
 *   nowait  preadv2/pwritev2 with RWF_NOWAIT on the loop; on EAGAIN, and for good after EOPNOTSUPP
 *           (as FileBlockStore remembers it), the I/O goes to the pool: Ferry's path today.
 *
 * Each round runs every mechanism for -t seconds at QD 1 and at QD 32, the order rotating from round
 * to round; the summary (stdout, Markdown rows) gives the median over the rounds of IOPS, the p50 and
 * p99 latency (from queueing the I/O to the loop taking its completion), the process's CPU time per
 * I/O (user + system, io_uring's kernel workers included) and how many I/Os completed inline (nowait:
 * the RWF_NOWAIT call succeeded; uring: the CQE was there right after the submit). Each run goes to
 * stderr as it ends.
 *
 * Build: cc -O2 -o io-path io-path.c -luring -lpthread   (needs liburing-dev); scripts/io-path runs it
 * on ext4 and XFS.
 * Usage: io-path [-m read|write|cold|direct] [-s BYTES] [-t SECONDS] [-r ROUNDS] [-T THREADS] [-l LABEL] FILE
 *   -m  read: buffered reads, the file in the page cache (default); write: buffered writes; cold:
 *       buffered reads, the file's pages dropped (POSIX_FADV_DONTNEED) before each run and each block
 *       again as its read completes (else the run fills the cache, the faster mechanism sooner); direct:
 *       O_DIRECT reads (pool and uring only: Ferry opens no file O_DIRECT)
 *   -s  file size, M or G suffix (default 1G); a shorter file is written out first
 *   -T  pool workers (default 2 x cores, as ferryd's I/O thread pool)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "clock-random.h"

#define BLOCK 4096
#define MAX_ROUNDS 32
enum { POOL, URING, NOWAIT, MECHANISMS };
static const char *mechanism_names[MECHANISMS] = {"pool", "uring", "nowait"};
static const int depths[] = {1, 32};
#define DEPTHS 2

struct io {
    struct io *next;
    uint64_t offset, started_ns;
    ssize_t result;
    char *buffer;
};

static struct {
    const char *mode;
    int fd, write, cold, epoll, eventfd, threads;
    uint64_t blocks, rng, deadline_ns;
    struct io *ready; /* I/Os to start, on the loop */
    int in_flight, stopping, pending_sqes, nowait_refused;
    uint64_t *latencies, inline_count;
    size_t count, capacity;
    struct io_uring ring;
    pthread_mutex_t work_lock, done_lock;
    pthread_cond_t work;
    struct io *work_head, *work_tail, *done;
} s = {.mode = "read", .work_lock = PTHREAD_MUTEX_INITIALIZER, .done_lock = PTHREAD_MUTEX_INITIALIZER,
    .work = PTHREAD_COND_INITIALIZER, .rng = 88172645463325252ull};

static void die(const char *what) {
    perror(what);
    exit(1);
}

static uint64_t next_random(void) { return xorshift64star(&s.rng); }

static void *worker(void *unused) {
    (void)unused;
    pthread_mutex_lock(&s.work_lock);
    for (;;) {
        while (s.work_head == NULL) pthread_cond_wait(&s.work, &s.work_lock);
        struct io *io = s.work_head;
        s.work_head = io->next;
        pthread_mutex_unlock(&s.work_lock);
        io->result = s.write ? pwrite(s.fd, io->buffer, BLOCK, (off_t)io->offset)
                             : pread(s.fd, io->buffer, BLOCK, (off_t)io->offset);
        if (io->result < 0) io->result = -errno;
        pthread_mutex_lock(&s.done_lock);
        int first = s.done == NULL; /* the loop has taken every earlier completion: wake it */
        io->next = s.done;
        s.done = io;
        pthread_mutex_unlock(&s.done_lock);
        uint64_t one = 1;
        if (first && write(s.eventfd, &one, sizeof one) != sizeof one) die("eventfd write");
        pthread_mutex_lock(&s.work_lock);
    }
    return NULL;
}

static void to_pool(struct io *io) {
    pthread_mutex_lock(&s.work_lock);
    io->next = NULL;
    if (s.work_head == NULL) s.work_head = io; else s.work_tail->next = io;
    s.work_tail = io;
    pthread_cond_signal(&s.work);
    pthread_mutex_unlock(&s.work_lock);
}

/* On the loop: an I/O is done; record its latency and start it again unless the run is over. */
static void complete(struct io *io) {
    if (io->result != BLOCK) {
        fprintf(stderr, "io-path: I/O at %llu returned %zd\n", (unsigned long long)io->offset, io->result);
        exit(1);
    }
    uint64_t now = now_ns();
    if (s.count == s.capacity) {
        s.capacity = s.capacity ? 2 * s.capacity : 1 << 20;
        if ((s.latencies = realloc(s.latencies, s.capacity * sizeof *s.latencies)) == NULL) die("realloc");
    }
    s.latencies[s.count++] = now - io->started_ns;
    if (s.cold) posix_fadvise(s.fd, (off_t)io->offset, BLOCK, POSIX_FADV_DONTNEED);
    s.in_flight--;
    if (now >= s.deadline_ns) s.stopping = 1;
    if (!s.stopping) {
        io->next = s.ready;
        s.ready = io;
    }
}

static void start(struct io *io, int mechanism) {
    io->offset = next_random() % s.blocks * BLOCK;
    io->started_ns = now_ns();
    s.in_flight++;
    if (mechanism == NOWAIT && !s.nowait_refused) {
        struct iovec vector = {io->buffer, BLOCK};
        io->result = s.write ? pwritev2(s.fd, &vector, 1, (off_t)io->offset, RWF_NOWAIT)
                             : preadv2(s.fd, &vector, 1, (off_t)io->offset, RWF_NOWAIT);
        if (io->result >= 0) {
            s.inline_count++;
            complete(io);
            return;
        }
        if (errno == EOPNOTSUPP) s.nowait_refused = 1; else if (errno != EAGAIN) die("RWF_NOWAIT");
    }
    if (mechanism != URING) {
        to_pool(io);
        return;
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s.ring);
    if (s.write) io_uring_prep_write(sqe, s.fd, io->buffer, BLOCK, io->offset);
    else io_uring_prep_read(sqe, s.fd, io->buffer, BLOCK, io->offset);
    io_uring_sqe_set_data(sqe, io);
    s.pending_sqes++;
}

static unsigned reap_ring(void) {
    struct io_uring_cqe *cqe;
    unsigned head, reaped = 0;
    io_uring_for_each_cqe(&s.ring, head, cqe) {
        struct io *io = io_uring_cqe_get_data(cqe);
        io->result = cqe->res;
        reaped++;
        complete(io);
    }
    io_uring_cq_advance(&s.ring, reaped);
    return reaped;
}

static int by_value(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double cpu_us(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec * 1e6 + usage.ru_utime.tv_usec + usage.ru_stime.tv_sec * 1e6 + usage.ru_stime.tv_usec;
}

enum { IOPS, P50, P99, CPU, INLINE, FIELDS };

/* One run: `depth` I/Os in flight through `mechanism` for `seconds`; fills result[FIELDS]. */
static void run(int mechanism, int depth, double seconds, struct io *ios, double *result) {
    if (s.cold && posix_fadvise(s.fd, 0, 0, POSIX_FADV_DONTNEED) != 0) die("fadvise");
    s.count = s.inline_count = 0;
    s.stopping = s.nowait_refused = 0;
    double cpu_before = cpu_us();
    uint64_t began = now_ns();
    s.deadline_ns = began + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < depth; i++) {
        ios[i].next = s.ready;
        s.ready = &ios[i];
    }
    for (;;) {
        while (s.ready != NULL) {
            struct io *io = s.ready;
            s.ready = io->next;
            start(io, mechanism);
        }
        if (s.pending_sqes > 0) {
            if (io_uring_submit(&s.ring) != s.pending_sqes) die("io_uring_submit");
            s.pending_sqes = 0;
            unsigned reaped = reap_ring();
            s.inline_count += reaped;
            if (reaped > 0) continue;
        }
        if (s.in_flight == 0) break; /* only once stopping: otherwise an I/O would be ready */
        struct epoll_event event;
        if (epoll_wait(s.epoll, &event, 1, -1) < 0 && errno != EINTR) die("epoll_wait");
        uint64_t value; /* read before taking the queue, or a worker's wake-up could be lost */
        if (read(s.eventfd, &value, sizeof value) < 0 && errno != EAGAIN) die("eventfd read");
        pthread_mutex_lock(&s.done_lock);
        struct io *done = s.done;
        s.done = NULL;
        pthread_mutex_unlock(&s.done_lock);
        while (done != NULL) {
            struct io *io = done;
            done = io->next;
            complete(io);
        }
        reap_ring();
    }
    double elapsed = (double)(now_ns() - began) / 1e9;
    qsort(s.latencies, s.count, sizeof *s.latencies, by_value);
    result[IOPS] = (double)s.count / elapsed;
    result[P50] = (double)s.latencies[s.count / 2] / 1000;
    result[P99] = (double)s.latencies[s.count * 99 / 100] / 1000;
    result[CPU] = (cpu_us() - cpu_before) / (double)s.count;
    result[INLINE] = 100.0 * (double)s.inline_count / (double)s.count;
}

static int by_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *values, int n) {
    qsort(values, (size_t)n, sizeof *values, by_double);
    return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

static uint64_t parse_size(const char *text) {
    char *end;
    uint64_t value = strtoull(text, &end, 10);
    if (*end == 'M') value <<= 20; else if (*end == 'G') value <<= 30;
    return value;
}

/* Writes the file out to `size` if it is shorter (data, not holes), then reads it once into the page cache. */
static void prepare(const char *path, uint64_t size) {
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) die(path);
    static char chunk[1 << 20];
    memset(chunk, 0xa5, sizeof chunk);
    for (uint64_t at = (uint64_t)st.st_size / sizeof chunk * sizeof chunk; at < size; at += sizeof chunk)
        if (pwrite(fd, chunk, sizeof chunk, (off_t)at) != (ssize_t)sizeof chunk) die("write out");
    if (fsync(fd) != 0) die("fsync");
    for (uint64_t at = 0; at < size; at += sizeof chunk)
        if (pread(fd, chunk, sizeof chunk, (off_t)at) < 0) die("read in");
    close(fd);
}

int main(int argc, char **argv) {
    uint64_t size = 1ull << 30;
    double seconds = 3;
    int rounds = 3, c;
    const char *label = "";
    s.threads = 2 * (int)sysconf(_SC_NPROCESSORS_ONLN);
    while ((c = getopt(argc, argv, "m:s:t:r:T:l:")) != -1) {
        switch (c) {
        case 'm': s.mode = optarg; break;
        case 's': size = parse_size(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'r': rounds = atoi(optarg); break;
        case 'T': s.threads = atoi(optarg); break;
        case 'l': label = optarg; break;
        default: optind = argc + 1;
        }
    }
    int direct = strcmp(s.mode, "direct") == 0;
    if (optind != argc - 1 || rounds < 1 || rounds > MAX_ROUNDS || size < BLOCK ||
        (!direct && strcmp(s.mode, "read") && strcmp(s.mode, "write") && strcmp(s.mode, "cold"))) {
        fprintf(stderr, "usage: %s [-m read|write|cold|direct] [-s BYTES] [-t SECONDS] [-r ROUNDS] [-T THREADS] "
            "[-l LABEL] FILE\n", argv[0]);
        return 2;
    }
    prepare(argv[optind], size);
    s.write = strcmp(s.mode, "write") == 0;
    s.blocks = size / BLOCK;
    if ((s.fd = open(argv[optind], (s.write ? O_RDWR : O_RDONLY) | (direct ? O_DIRECT : 0))) < 0) die(argv[optind]);
    if ((s.cold = strcmp(s.mode, "cold") == 0)) posix_fadvise(s.fd, 0, 0, POSIX_FADV_RANDOM); /* no readahead */
    if ((s.eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 || (s.epoll = epoll_create1(EPOLL_CLOEXEC)) < 0) die("eventfd");
    struct epoll_event event = {.events = EPOLLIN};
    if (epoll_ctl(s.epoll, EPOLL_CTL_ADD, s.eventfd, &event) != 0) die("epoll_ctl");
    int error = io_uring_queue_init(64, &s.ring, 0);
    if (error == 0) error = io_uring_register_eventfd(&s.ring, s.eventfd);
    if (error != 0) {
        errno = -error;
        die("io_uring");
    }
    for (int i = 0; i < s.threads; i++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, worker, NULL) != 0) die("pthread_create");
    }
    struct io ios[32];
    for (int i = 0; i < 32; i++) {
        if (posix_memalign((void **)&ios[i].buffer, BLOCK, BLOCK) != 0) die("posix_memalign");
        memset(ios[i].buffer, 0x5a, BLOCK);
    }

    int mechanisms = direct ? NOWAIT : MECHANISMS; /* O_DIRECT: pool and uring */
    static double results[MECHANISMS][DEPTHS][FIELDS][MAX_ROUNDS];
    for (int round = 0; round < rounds; round++) {
        for (int d = 0; d < DEPTHS; d++) {
            for (int k = 0; k < mechanisms; k++) {
                int m = (k + round) % mechanisms;
                double result[FIELDS];
                run(m, depths[d], seconds, ios, result);
                for (int f = 0; f < FIELDS; f++) results[m][d][f][round] = result[f];
                fprintf(stderr, "io-path: %s round %d QD %d %-6s %8.0f IOPS  p50 %7.1f µs  p99 %7.1f µs  "
                    "%5.1f µs CPU/IO  %5.1f %% inline\n", label, round + 1, depths[d], mechanism_names[m],
                    result[IOPS], result[P50], result[P99], result[CPU], result[INLINE]);
            }
        }
    }
    for (int d = 0; d < DEPTHS; d++) {
        for (int m = 0; m < mechanisms; m++) {
            double value[FIELDS];
            for (int f = 0; f < FIELDS; f++) value[f] = median(results[m][d][f], rounds);
            printf("| %s | %d | %s | %.0f | %.1f | %.1f | %.1f | %.0f %% |\n", label, depths[d], mechanism_names[m],
                value[IOPS], value[P50], value[P99], value[CPU], value[INLINE]);
        }
    }
    return 0;
}
