import FerryTarget
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The service manager notification protocol (sd_notify(3)), without libsystemd: each state
/// change is one datagram of newline-separated `KEY=VALUE` lines sent to the Unix socket named
/// by `$NOTIFY_SOCKET`. A name starting with `@` is in the abstract namespace.
///
/// Under `Type=notify`, systemd waits for `READY=1` before it counts the service as started,
/// for `READY=1` after `RELOADING=1` before it counts a reload as done, and expects `WATCHDOG=1`
/// at least every `WatchdogSec=` (passed as `$WATCHDOG_USEC`).
struct SystemdNotifier: Sendable {
    /// The socket address, as sendto(2) takes it.
    private let address: sockaddr_un
    private let addressLength: socklen_t
    /// How often systemd expects `WATCHDOG=1`, when it runs a watchdog for this process.
    let watchdogInterval: Duration?

    /// The notifier systemd's environment describes, or nil when ferryd does not run under a
    /// service manager that listens (no `$NOTIFY_SOCKET`, or one that cannot be addressed).
    init?(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty else { return nil }
        var bytes = Array(path.utf8)
        // sd_notify(3): a leading '@' names a socket in the abstract namespace (a leading NUL).
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        var address = sockaddr_un()
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity, bytes.first == 0 || bytes.first == UInt8(ascii: "/") else { return nil }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        self.address = address
        // Abstract names are exactly as long as given; paths end at their NUL.
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        self.addressLength = socklen_t(pathOffset + bytes.count + (bytes[0] == 0 ? 0 : 1))
        self.watchdogInterval = Self.watchdogInterval(environment)
    }

    /// `$WATCHDOG_USEC`, when `$WATCHDOG_PID` is unset or names this process.
    private static func watchdogInterval(_ environment: [String: String]) -> Duration? {
        guard let text = environment["WATCHDOG_USEC"], let microseconds = UInt64(text), microseconds > 0 else {
            return nil
        }
        if let pid = environment["WATCHDOG_PID"], pid != String(getpid()) { return nil }
        return .microseconds(microseconds)
    }

    /// Sends one notification, such as `["READY=1", "STATUS=serving"]`. A manager that went
    /// away is not ferryd's problem: failures are ignored, as sd_notify's callers do.
    func notify(_ assignments: [String]) {
        let message = assignments.joined(separator: "\n")
        #if canImport(Glibc)
            let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
            let descriptor = socket(AF_UNIX, SOCK_DGRAM, 0)
        #endif
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        var address = self.address
        let length = addressLength
        _ = message.utf8CString.withUnsafeBufferPointer { text in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(descriptor, text.baseAddress, text.count - 1, Int32(MSG_NOSIGNAL), $0, length)
                }
            }
        }
    }

    /// `RELOADING=1` needs `MONOTONIC_USEC=`, the CLOCK_MONOTONIC time of the reload request
    /// (systemd 253 and later use it to match the reload with its `READY=1`).
    static func monotonicMicroseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000 + UInt64(time.tv_nsec) / 1_000
    }
}

/// Tells the service manager what the target does: ready once the portals listen, stopping when
/// the graceful shutdown begins, and a watchdog keep-alive while every event loop runs.
struct ServiceManagerObserver: ISCSITargetObserver {
    let notifier: SystemdNotifier

    var heartbeatInterval: Duration? { notifier.watchdogInterval }

    func targetListening(_ status: TargetStatus) {
        notifier.notify(["READY=1", "STATUS=\(status.summary)"])
    }

    func targetStopping() {
        notifier.notify(["STOPPING=1", "STATUS=stopping: asking initiators to log out"])
    }

    func eventLoopsResponsive() {
        notifier.notify(["WATCHDOG=1"])
    }
}

extension TargetStatus {
    /// `serving 2 session(s), 3 LUN(s) of 2 target(s) on 1 portal(s)`, for `systemctl status`.
    var summary: String {
        "serving \(sessions) session(s), \(logicalUnits) LUN(s) of \(targets) target(s) on \(portals) portal(s)"
    }
}
