internal import CSGUtils

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The errno values the passthrough backend tells apart.
enum SGErrno {
    static let notPermitted = EPERM
    static let noDevice = ENODEV
    static let noSuchDeviceOrAddress = ENXIO
    static let outOfMemory = ENOMEM
    static let invalidArgument = EINVAL
    static let messageTooLong = EMSGSIZE
    static let argumentListTooLong = E2BIG
    static let overflow = EOVERFLOW
    /// sg's "this file already holds 16 requests".
    static let queueFull = EDOM
    static let wouldBlock = EAGAIN
    static let interrupted = EINTR
}

/// Thin wrappers over the system calls of the sg interface, each returning the result or the
/// errno (the shape of NIOFS's Syscall.swift).
enum SGSystemCalls {
    static func open(_ path: String, flags: Int32) -> Result<Int32, SGSystemCallError> {
        retryingOnInterrupt { Glibc.open(path, flags | O_CLOEXEC) }
    }

    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// Queues one request (asynchronous sg v3): `write()` of the header.
    static func write(_ fd: Int32, _ header: inout sg_io_hdr_t) -> Result<Void, SGSystemCallError> {
        let size = MemoryLayout<sg_io_hdr_t>.size
        return retryingOnInterrupt { Glibc.write(fd, &header, size) }.map { _ in () }
    }

    /// Takes one completed request: `read()` of a header; `.wouldBlock` when none is ready.
    static func read(_ fd: Int32, _ header: inout sg_io_hdr_t) -> Result<Void, SGSystemCallError> {
        let size = MemoryLayout<sg_io_hdr_t>.size
        return retryingOnInterrupt { Glibc.read(fd, &header, size) }.map { _ in () }
    }

    /// Runs one request synchronously (SG_IO).
    static func sgIO(_ fd: Int32, _ header: inout sg_io_hdr_t) -> Result<Void, SGSystemCallError> {
        let result = ferry_sg_io(fd, &header)
        return result == 0 ? .success(()) : .failure(SGSystemCallError(errno: -result))
    }

    /// An ioctl taking a pointer to an int, which it may update.
    static func ioctl(_ fd: Int32, _ request: UInt, _ value: inout Int32) -> Result<Int32, SGSystemCallError> {
        let result = ferry_ioctl_int(fd, request, &value)
        return result == 0 ? .success(value) : .failure(SGSystemCallError(errno: -result))
    }

    private static func retryingOnInterrupt<T: BinaryInteger>(_ call: () -> T) -> Result<T, SGSystemCallError> {
        while true {
            let result = call()
            if result >= 0 { return .success(result) }
            if errno != EINTR { return .failure(SGSystemCallError(errno: errno)) }
        }
    }
}

/// A failed system call's errno.
struct SGSystemCallError: Error, Hashable, CustomStringConvertible {
    var errno: Int32

    var isQueueFull: Bool { errno == SGErrno.queueFull || errno == SGErrno.wouldBlock }

    var description: String { String(cString: strerror(errno)) }
}
