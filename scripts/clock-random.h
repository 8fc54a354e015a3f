/* The monotonic clock and the random number generator that scripts/iscsi-load.c and scripts/io-path.c share
 * (each is compiled on its own, with this header beside it). */
#ifndef FERRY_SCRIPTS_CLOCK_RANDOM_H
#define FERRY_SCRIPTS_CLOCK_RANDOM_H

#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: fast, and good enough to spread I/Os over a LUN. `state` must not be 0. */
static inline uint64_t xorshift64star(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ull;
}

#endif
