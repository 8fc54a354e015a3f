import Foundation

/// The Linux capabilities the passthrough backend needs, read from the effective set.
///
/// Sending arbitrary CDBs through sg needs CAP_SYS_RAWIO: without it the kernel's
/// `scsi_cmd_allowed()` passes only a fixed list of common commands (READ, WRITE, INQUIRY, MODE
/// SENSE…) and fails every other one with EPERM. The SG_SCSI_RESET ioctl that task management
/// escalates to needs CAP_SYS_ADMIN too.
public struct PassthroughCapabilities: Sendable, Hashable {
    /// CAP_SYS_RAWIO (17).
    public var rawIO: Bool
    /// CAP_SYS_ADMIN (21).
    public var admin: Bool

    public init(rawIO: Bool, admin: Bool) {
        self.rawIO = rawIO
        self.admin = admin
    }

    static let rawIOBit = 17
    static let adminBit = 21

    /// The effective capabilities of this process, from /proc/self/status; nil when they cannot
    /// be read.
    public static func current(statusFile: String = "/proc/self/status") -> PassthroughCapabilities? {
        guard let text = try? String(contentsOfFile: statusFile, encoding: .utf8) else { return nil }
        return parse(status: text)
    }

    /// Reads the `CapEff:` line of a /proc/PID/status text.
    public static func parse(status: String) -> PassthroughCapabilities? {
        for line in status.split(separator: "\n") where line.hasPrefix("CapEff:") {
            guard let mask = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
            else { return nil }
            return PassthroughCapabilities(rawIO: mask & (1 << rawIOBit) != 0, admin: mask & (1 << adminBit) != 0)
        }
        return nil
    }

    /// What is missing, said plainly for the start-up log; nil when nothing is.
    public var missing: String? {
        switch (rawIO, admin) {
        case (true, true):
            nil
        case (true, false):
            "CAP_SYS_ADMIN is missing: device and target resets (SG_SCSI_RESET) for task management will fail"
        case (false, true):
            "CAP_SYS_RAWIO is missing: the kernel passes only common commands (READ, WRITE, INQUIRY…) "
                + "and refuses the rest"
        case (false, false):
            "CAP_SYS_RAWIO and CAP_SYS_ADMIN are missing: the kernel passes only common commands (READ, WRITE, "
                + "INQUIRY…) and refuses the rest, and device resets will fail"
        }
    }
}
