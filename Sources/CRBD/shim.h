// Ceph's block device and object store client libraries (Debian: librbd-dev, librados-dev).
#include <rados/librados.h>
#include <rbd/librbd.h>
