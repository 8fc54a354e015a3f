#ifndef FERRY_CLINUXIO_SHIM_H
#define FERRY_CLINUXIO_SHIM_H
// preadv2 with RWF_NOWAIT (Linux 4.14): glibc declares preadv2 only under _GNU_SOURCE, which Swift's
// Glibc module is not built with, so this calls the system call itself. (pwritev2 with RWF_NOWAIT
// is not here: ext4 refuses it for buffered writes with EOPNOTSUPP.)
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
#endif
