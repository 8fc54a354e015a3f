#ifndef FERRY_CLINUXIO_SHIM_H
#define FERRY_CLINUXIO_SHIM_H
// preadv2 and pwritev2 with RWF_NOWAIT (Linux 4.14): glibc declares them only under _GNU_SOURCE,
// which Swift's Glibc module is not built with, so these call the system calls themselves.
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/fs.h>

// One range at `offset`, served only from the page cache: -1 with errno EAGAIN when that would mean
// waiting for the device, EOPNOTSUPP when the file system cannot tell. The offset travels as the
// kernel's pos_l/pos_h pair; on 64-bit Linux pos_l holds all of it.
static inline ssize_t ferry_preadv2_nowait(int fd, void *buffer, size_t length, unsigned long long offset) {
    struct iovec vector = { buffer, length };
    return syscall(SYS_preadv2, fd, &vector, 1, (unsigned long)offset, 0UL, RWF_NOWAIT);
}

// The same for a write: EAGAIN when it would wait (for a lock, for memory, for blocks), EOPNOTSUPP
// where the file system cannot take buffered writes so (ext4, tmpfs; XFS and btrfs can).
static inline ssize_t ferry_pwritev2_nowait(int fd, const void *buffer, size_t length, unsigned long long offset) {
    struct iovec vector = { (void *)buffer, length };
    return syscall(SYS_pwritev2, fd, &vector, 1, (unsigned long)offset, 0UL, RWF_NOWAIT);
}
#endif
