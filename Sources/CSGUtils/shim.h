#ifndef FERRY_CSGUTILS_SHIM_H
#define FERRY_CSGUTILS_SHIM_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <scsi/sg.h>
#include <scsi/sg_lib.h>
#include <scsi/sg_pt.h>
#include <scsi/sg_cmds_basic.h>

/* From the kernel's include/scsi/sg.h; glibc's <scsi/sg.h> lacks them. */
#ifndef SG_SCSI_RESET_TARGET
#define SG_SCSI_RESET_TARGET 4
#endif
#ifndef SG_SCSI_RESET_NO_ESCALATE
#define SG_SCSI_RESET_NO_ESCALATE 0x100
#endif
#ifndef SG_FLAG_Q_AT_TAIL
#define SG_FLAG_Q_AT_TAIL 0x10
#endif

/* BLKSECTGET (<linux/fs.h>, _IO(0x12, 103)): on an sg node the kernel answers with the request
 * queue's max_sectors in bytes. */
#define FERRY_BLKSECTGET 0x1267

/* The ioctls the passthrough backend issues. Each returns 0 or a negated errno. */

/* SG_IO: one synchronous command on /dev/sgN or /dev/sdX. */
static inline int ferry_sg_io(int fd, sg_io_hdr_t *header) {
    return ioctl(fd, SG_IO, header) < 0 ? -errno : 0;
}

/* An ioctl whose argument is a pointer to an int (SG_GET_VERSION_NUM, SG_GET_RESERVED_SIZE,
 * SG_SET_RESERVED_SIZE, SG_SCSI_RESET, FERRY_BLKSECTGET…). */
static inline int ferry_ioctl_int(int fd, unsigned long request, int *value) {
    return ioctl(fd, request, value) < 0 ? -errno : 0;
}

#endif
