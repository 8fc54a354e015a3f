import CLinuxIO
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A ``BlockStore`` over a regular file or a Linux block device.
///
/// Regular files are created sparse (mode 0600) when missing; unmap punches holes
/// (`FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`) and GET LBA STATUS uses `SEEK_DATA`/`SEEK_HOLE`.
/// Block devices are sized with `BLKGETSIZE64` and unmapped with `BLKDISCARD`. Every call blocks.
public final class FileBlockStore: BlockStore {
    /// An error opening a store, with the errno and the path.
    public struct OpenError: Error, Sendable, Hashable, CustomStringConvertible {
        public var path: String
        public var operation: String
        public var errno: Int32

        public var description: String {
            if operation == "open", errno == ELOOP {
                return "cannot open \(path): it is a symbolic link; give the file itself as the LUN's path"
                    + " (Ferry follows links only under /dev, to device nodes)"
            }
            return "cannot \(operation) \(path): \(String(cString: strerror(errno))) (errno \(errno))"
        }
    }

    public let path: String
    /// "file" or "block".
    public let kind: String
    public let byteCount: UInt64
    public let supportsUnmap: Bool
    public let unmappedReadsZero: Bool
    public let identity: String
    /// The logical sector size of a block device (BLKSSZGET); 512 for regular files.
    public let logicalSectorSize: Int
    /// The physical block size of a block device (BLKPBSZGET), the file system block of a regular
    /// file (`st_blksize`): holes are punched and writes land in units of it.
    public let physicalBlockSize: Int
    public let isBlockDevice: Bool
    private let descriptor: Int32
    /// Whether `preadv2(RWF_NOWAIT)` works here; cleared the first time the file system says it does not.
    private let readsWithoutWaiting = Atomic(true)
    /// Whether `pwritev2(RWF_NOWAIT)` works here; cleared the first time the file system says it does not.
    private let writesWithoutWaiting = Atomic(true)

    /// Opens `path`: a block device, or a regular file that is created sparse with
    /// `createWithSize` bytes if it does not exist.
    ///
    /// A symbolic link as the last component of `path` is refused (`O_NOFOLLOW`, ELOOP), unless
    /// `path` is under /dev: there udev names block devices with links (/dev/disk/by-id/...,
    /// /dev/ferry/NAME) that only root can make. Elsewhere, whoever can write the LUN's directory
    /// could point the link at another file (another target's image, /etc/shadow), or make Ferry
    /// create one through a dangling link.
    public init(path: String, createWithSize size: UInt64? = nil, readOnly: Bool = false) throws(OpenError) {
        self.path = path
        var flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC
        if !Self.followsSymbolicLinks(path) { flags |= O_NOFOLLOW }
        if size != nil && !readOnly { flags |= O_CREAT }
        let fd = open(path, flags, 0o600)
        guard fd >= 0 else { throw OpenError(path: path, operation: "open", errno: errno) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let error = errno
            close(fd)
            throw OpenError(path: path, operation: "stat", errno: error)
        }
        descriptor = fd
        identity = "\(info.st_dev):\(info.st_ino)"
        switch info.st_mode & S_IFMT {
        case S_IFBLK:
            isBlockDevice = true
            kind = "block"
            var bytes: UInt64 = 0
            var sector: Int32 = 512
            var physical: UInt32 = 0
            guard ioctl(fd, Self.BLKGETSIZE64, &bytes) == 0, ioctl(fd, Self.BLKSSZGET, &sector) == 0 else {
                let error = errno
                close(fd)
                throw OpenError(path: path, operation: "query the size of", errno: error)
            }
            byteCount = bytes
            logicalSectorSize = Int(sector)
            physicalBlockSize = ioctl(fd, Self.BLKPBSZGET, &physical) == 0 ? Int(physical) : Int(sector)
            supportsUnmap = !readOnly
            // BLKDISCARD does not promise zeroes on every device; BLKZEROOUT would be needed.
            unmappedReadsZero = false
        case S_IFREG:
            isBlockDevice = false
            kind = "file"
            logicalSectorSize = 512
            physicalBlockSize = Int(info.st_blksize)
            if info.st_size == 0, let size, size > 0 {
                guard ftruncate(fd, off_t(size)) == 0 else {
                    let error = errno
                    close(fd)
                    throw OpenError(path: path, operation: "size", errno: error)
                }
                byteCount = size
            } else {
                byteCount = UInt64(info.st_size)
            }
            supportsUnmap = !readOnly
            unmappedReadsZero = true
        default:
            close(fd)
            throw OpenError(path: path, operation: "use (not a regular file or block device)", errno: EINVAL)
        }
    }

    deinit {
        close(descriptor)
    }

    /// Whether a symbolic link at the end of `path` is followed: only for device nodes under /dev.
    public static func followsSymbolicLinks(_ path: String) -> Bool {
        path.hasPrefix("/dev/")
    }

    // From <linux/fs.h>: _IOR(0x12, 114, size_t), _IO(0x12, 104), _IO(0x12, 123), _IO(0x12, 119).
    private static let BLKGETSIZE64: UInt = 0x8008_1272
    private static let BLKSSZGET: UInt = 0x1268
    private static let BLKPBSZGET: UInt = 0x127b
    private static let BLKDISCARD: UInt = 0x1277
    // From <linux/falloc.h>.
    private static let FALLOC_FL_KEEP_SIZE: Int32 = 0x01
    private static let FALLOC_FL_PUNCH_HOLE: Int32 = 0x02
    // From <unistd.h> (_GNU_SOURCE, which Swift's Glibc module does not define).
    private static let SEEK_DATA: Int32 = 3
    private static let SEEK_HOLE: Int32 = 4

    /// glibc's `fallocate`, which the Glibc module hides behind _GNU_SOURCE; looked up once.
    private static let fallocate: (@convention(c) (Int32, Int32, off_t, off_t) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "fallocate") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32, off_t, off_t) -> Int32).self)
    }()

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        var done = 0
        while done < buffer.count {
            let count = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if count < 0 {
                if errno == EINTR { continue }
                throw error("pread", errno)
            }
            // > Short reads past the end are an error.
            if count == 0 { throw error("pread", EIO) }
            done += count
        }
    }

    /// `preadv2` with `RWF_NOWAIT`: page-cache hits only. A range partly in the cache reads in several calls, and
    /// gives up at the first part that is not.
    public func readWithoutWaiting(
        into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64
    ) throws(BlockStoreError) -> Bool {
        guard readsWithoutWaiting.load(ordering: .relaxed) else { return false }
        var done = 0
        while done < buffer.count {
            let count = ferry_preadv2_nowait(
                descriptor, buffer.baseAddress! + done, buffer.count - done, offset &+ UInt64(done))
            if count < 0 {
                switch errno {
                case EINTR: continue
                case EAGAIN: return false
                case EOPNOTSUPP, ENOSYS, EINVAL:
                    // The file system (or kernel) cannot tell: every read goes to the I/O threads from now on.
                    readsWithoutWaiting.store(false, ordering: .relaxed)
                    return false
                case let code: throw error("preadv2", code)
                }
            }
            if count == 0 { throw error("preadv2", EIO) }
            done += count
        }
        return true
    }

    /// `pwritev2` with `RWF_NOWAIT`: a buffered write that the file system takes without waiting (XFS and btrfs
    /// can; ext4 and tmpfs say EOPNOTSUPP, and from then on every write goes to the I/O threads). XFS says EAGAIN
    /// when the write would wait: for a page to be read, or to update the file's mtime, which the first write of
    /// each clock tick must do. A write cut short by EAGAIN is written again whole by
    /// ``write(_:at:forceUnitAccess:)``, which brings the mtime up to date for the writes that follow.
    public func writeWithoutWaiting(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(BlockStoreError) -> Bool {
        guard writesWithoutWaiting.load(ordering: .relaxed) else { return false }
        var done = 0
        while done < buffer.count {
            let count = ferry_pwritev2_nowait(
                descriptor, buffer.baseAddress! + done, buffer.count - done, offset &+ UInt64(done))
            if count < 0 {
                switch errno {
                case EINTR: continue
                case EAGAIN: return false
                case EOPNOTSUPP, ENOSYS, EINVAL:
                    writesWithoutWaiting.store(false, ordering: .relaxed)
                    return false
                case let code: throw error("pwritev2", code)
                }
            }
            if count == 0 { throw error("pwritev2", EIO) }
            done += count
        }
        return true
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, forceUnitAccess: Bool) throws(BlockStoreError) {
        var done = 0
        while done < buffer.count {
            let count = pwrite(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if count < 0 {
                if errno == EINTR { continue }
                throw error("pwrite", errno)
            }
            if count == 0 { throw error("pwrite", EIO) }
            done += count
        }
        if forceUnitAccess && buffer.count > 0 {
            // Durability of the range: sync_file_range cannot flush the device cache, fdatasync can.
            try synchronize()
        }
    }

    public func synchronize() throws(BlockStoreError) {
        while fdatasync(descriptor) != 0 {
            if errno != EINTR { throw error("fdatasync", errno) }
        }
    }

    public func unmap(offset: UInt64, length: UInt64) throws(BlockStoreError) {
        guard length > 0 else { return }
        guard supportsUnmap else { throw error("unmap", EOPNOTSUPP) }
        if isBlockDevice {
            var range: (UInt64, UInt64) = (offset, length)
            guard ioctl(descriptor, Self.BLKDISCARD, &range) == 0 else { throw error("BLKDISCARD", errno) }
            return
        }
        guard let fallocate = Self.fallocate else { throw error("fallocate", ENOSYS) }
        while fallocate(descriptor, Self.FALLOC_FL_PUNCH_HOLE | Self.FALLOC_FL_KEEP_SIZE, off_t(offset), off_t(length)) != 0 {
            if errno != EINTR { throw error("fallocate(PUNCH_HOLE)", errno) }
        }
    }

    public func mappingStatus(at offset: UInt64) throws(BlockStoreError) -> (mapped: Bool, length: UInt64) {
        guard offset < byteCount else { return (true, 0) }
        guard !isBlockDevice else { return (true, byteCount - offset) }
        let data = lseek(descriptor, off_t(offset), Self.SEEK_DATA)
        if data < 0 {
            // ENXIO: no data at or after offset, the rest of the file is a hole.
            if errno == ENXIO { return (false, byteCount - offset) }
            // File systems without SEEK_DATA: everything is mapped.
            if errno == EINVAL || errno == EOPNOTSUPP { return (true, byteCount - offset) }
            throw error("lseek(SEEK_DATA)", errno)
        }
        if UInt64(data) > offset {
            return (false, min(UInt64(data), byteCount) - offset)
        }
        let hole = lseek(descriptor, off_t(offset), Self.SEEK_HOLE)
        guard hole >= 0 else { throw error("lseek(SEEK_HOLE)", errno) }
        return (true, min(UInt64(hole), byteCount) - offset)
    }

    private func error(_ operation: String, _ code: Int32) -> BlockStoreError {
        BlockStoreError(operation: "\(operation) on \(path)", errno: code)
    }
}
