import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension LogicalUnit.Backend {
    /// What a LUN's `path` names, as far as choosing its backend goes.
    public enum PathKind: Sendable, Hashable {
        /// A regular file, or nothing yet (the emulated backend creates it).
        case file
        /// A character device of the scsi_generic class (/dev/sgN).
        case scsiGeneric
        /// A whole SCSI disk (/dev/sdX): a block device whose sysfs entry has a SCSI device.
        case scsiDisk
        /// Any other block device: a partition, device mapper, MD, NVMe, loop, virtio…
        case otherBlockDevice
        /// Any other character device.
        case otherCharacterDevice
        /// A WWN (`naa.…`, `0x…`, `wwn-0x…`, `eui.…`) naming a SCSI device.
        case worldWideName
    }

    /// The backend of a LUN whose configuration names none: passthrough for SCSI devices (an sg
    /// node, a whole SCSI disk, a WWN), the emulated disk for everything else.
    public static func automatic(for kind: PathKind) -> Self {
        switch kind {
        case .scsiGeneric, .scsiDisk, .worldWideName: .sg
        case .file, .otherBlockDevice, .otherCharacterDevice: .emulated
        }
    }

    /// Whether `path` is a WWN rather than a file name: `naa.`, `eui.`, `0x` or `wwn-0x` followed
    /// by 8 to 32 hexadecimal digits.
    public static func isWorldWideName(_ path: String) -> Bool {
        let lower = path.lowercased()
        guard let prefix = ["naa.", "eui.", "wwn-0x", "0x"].first(where: { lower.hasPrefix($0) }) else { return false }
        let digits = lower.dropFirst(prefix.count)
        return (8...32).contains(digits.count) && digits.allSatisfy(\.isHexDigit)
    }

    /// What `path` names, following symlinks (/dev/disk/by-id/…), with sysfs at `sysfs`.
    public static func classify(_ path: String, sysfs: String = "/sys") -> PathKind {
        if isWorldWideName(path) { return .worldWideName }
        var status = stat()
        guard stat(path, &status) == 0 else { return .file }
        var name = (path as NSString).lastPathComponent
        if let resolved = realpath(path, nil) {
            name = (String(cString: resolved) as NSString).lastPathComponent
            free(resolved)
        }
        let fileManager = FileManager.default
        switch status.st_mode & S_IFMT {
        case S_IFCHR:
            return fileManager.fileExists(atPath: "\(sysfs)/class/scsi_generic/\(name)")
                ? .scsiGeneric : .otherCharacterDevice
        case S_IFBLK:
            return fileManager.fileExists(atPath: "\(sysfs)/class/block/\(name)/device/scsi_device")
                ? .scsiDisk : .otherBlockDevice
        default:
            return .file
        }
    }
}
