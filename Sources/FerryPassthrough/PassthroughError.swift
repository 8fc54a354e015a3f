/// Why a passthrough logical unit could not be set up, worded for the operator.
public struct PassthroughError: Error, Hashable, CustomStringConvertible {
    private enum Base: Hashable {
        case noDevice(path: String, reason: String)
        case cannotOpen(path: String, errno: Int32, hint: String)
        case probeFailed(path: String, reason: String)
    }

    private let base: Base

    private init(_ base: Base) {
        self.base = base
    }

    /// `path` names no SCSI device Ferry can pass commands to.
    @inline(never)
    public static func noDevice(_ path: String, _ reason: String) -> PassthroughError {
        PassthroughError(.noDevice(path: path, reason: reason))
    }

    /// Opening the device node failed with `errno`.
    @inline(never)
    public static func cannotOpen(_ path: String, errno: Int32, hint: String) -> PassthroughError {
        PassthroughError(.cannotOpen(path: path, errno: errno, hint: hint))
    }

    /// The device did not answer the probes at open (INQUIRY, READ CAPACITY).
    @inline(never)
    public static func probeFailed(_ path: String, _ reason: String) -> PassthroughError {
        PassthroughError(.probeFailed(path: path, reason: reason))
    }

    public var description: String {
        switch base {
        case .noDevice(let path, let reason):
            "passthrough \(path): \(reason)"
        case .cannotOpen(let path, let errno, let hint):
            "passthrough \(path): cannot open: \(String(cString: strerror(errno)))\(hint.isEmpty ? "" : "; \(hint)")"
        case .probeFailed(let path, let reason):
            "passthrough \(path): the device did not answer at open: \(reason)"
        }
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif
