import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The device node a passthrough LUN's `path` names, as found through sysfs.
public struct PassthroughDevice: Sendable, Hashable {
    public enum Access: Sendable, Hashable {
        /// /dev/sgN: the asynchronous sg v3 interface.
        case generic
        /// /dev/sdX without an sg node: synchronous SG_IO on the block device.
        case block
    }

    /// The node Ferry opens.
    public var node: String
    public var access: Access
    /// The kernel name of the SCSI disk (sdX) on the same device, if sd is bound to it.
    public var blockDeviceName: String?
    /// The kernel name of the sg node (sgN), if any.
    public var genericName: String?
}

/// Resolves a configured path or WWN to the sg node of its SCSI device, and reads the device's
/// queue limits, through sysfs. `root` is `/` in production and a directory tree in tests.
///
/// - /dev/sgN is used as it is.
/// - /dev/sdX and stable names (/dev/disk/by-id/…, /dev/disk/by-path/…, symlinks) resolve to the
///   SCSI disk, then through `/sys/class/block/sdX/device/scsi_generic/` to its /dev/sgN; a disk
///   without an sg node (the sg module not loaded) is used through SG_IO on the block device.
/// - A WWN (`naa.5000c500…`, `0x5000c500…`, `wwn-0x5000c500…`, `eui.…`) is matched against
///   `/sys/class/scsi_generic/sgN/device/wwid`.
public struct SysfsTopology: Sendable {
    public var root: String

    public init(root: String = "/") {
        self.root = root
    }

    private func join(_ path: String) -> String {
        root == "/" ? path : root + (path.hasPrefix("/") ? "" : "/") + path
    }

    /// `path` with every symlink resolved (realpath), or as it is when it does not exist.
    private static func resolvingSymlinks(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    private var fileManager: FileManager { .default }

    /// Whether `path` is a WWN rather than a file name: `naa.`, `eui.`, `0x` or `wwn-0x` followed
    /// by 8 to 32 hexadecimal digits (FerryConfig's `LogicalUnit.Backend.isWorldWideName`).
    public static func isWWN(_ path: String) -> Bool {
        let lower = path.lowercased()
        guard let prefix = ["naa.", "eui.", "wwn-0x", "0x"].first(where: { lower.hasPrefix($0) }) else { return false }
        let digits = lower.dropFirst(prefix.count)
        return (8...32).contains(digits.count) && digits.allSatisfy(\.isHexDigit)
    }

    /// The device `path` names. Throws ``PassthroughError`` with what to do when it names no
    /// SCSI device.
    public func resolve(_ path: String) throws(PassthroughError) -> PassthroughDevice {
        if Self.isWWN(path) {
            guard let name = genericName(forWWN: path) else {
                throw .noDevice(path, "no SCSI device in \(join("/sys/class/scsi_generic")) has this WWN")
            }
            return PassthroughDevice(
                node: join("/dev/\(name)"), access: .generic, blockDeviceName: blockDeviceName(ofGeneric: name),
                genericName: name)
        }
        let resolved = Self.resolvingSymlinks(join(path))
        let name = (resolved as NSString).lastPathComponent
        if fileManager.fileExists(atPath: join("/sys/class/scsi_generic/\(name)")) {
            return PassthroughDevice(
                node: resolved, access: .generic, blockDeviceName: blockDeviceName(ofGeneric: name), genericName: name)
        }
        let block = join("/sys/class/block/\(name)")
        guard fileManager.fileExists(atPath: block) else {
            throw .noDevice(path, "\(resolved) is neither an sg node nor a SCSI disk")
        }
        guard fileManager.fileExists(atPath: block + "/device/scsi_device") else {
            throw .noDevice(
                path,
                "\(name) is not a whole SCSI disk (a partition or a virtual block device): use backend \"emulated\"")
        }
        if let generic = firstEntry(of: block + "/device/scsi_generic") {
            let node = join("/dev/\(generic)")
            if fileManager.fileExists(atPath: node) {
                return PassthroughDevice(node: node, access: .generic, blockDeviceName: name, genericName: generic)
            }
        }
        return PassthroughDevice(node: resolved, access: .block, blockDeviceName: name, genericName: nil)
    }

    /// The most bytes one passthrough command can move, from the SCSI disk's request queue:
    /// `max_hw_sectors_kb`, the limit the block layer applies to passthrough requests
    /// (`blk_rq_get_max_sectors`), not `max_sectors_kb`, which only bounds file system I/O. Nil without a
    /// SCSI disk bound to it (then the sg node's BLKSECTGET answers, with the smaller max_sectors).
    public func maximumTransferBytes(of device: PassthroughDevice) -> Int? {
        guard let disk = device.blockDeviceName,
            let text = try? String(
                contentsOfFile: join("/sys/class/block/\(disk)/queue/max_hw_sectors_kb"), encoding: .utf8),
            let kilobytes = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), kilobytes > 0
        else { return nil }
        return kilobytes * 1024
    }

    /// The SCSI target of the device, "host:channel:target", from the name of its sysfs device
    /// directory (H:C:T:L); nil when sysfs does not show it.
    public func scsiTarget(of device: PassthroughDevice) -> String? {
        let link: String
        if let generic = device.genericName {
            link = join("/sys/class/scsi_generic/\(generic)/device")
        } else if let disk = device.blockDeviceName {
            link = join("/sys/class/block/\(disk)/device")
        } else {
            return nil
        }
        let address = (Self.resolvingSymlinks(link) as NSString).lastPathComponent.split(separator: ":")
        guard address.count == 4, address.allSatisfy({ UInt($0) != nil }) else { return nil }
        return address.prefix(3).joined(separator: ":")
    }

    private func blockDeviceName(ofGeneric name: String) -> String? {
        firstEntry(of: join("/sys/class/scsi_generic/\(name)/device/block"))
    }

    private func genericName(forWWN wwn: String) -> String? {
        let wanted = Self.normalizeWWN(wwn)
        let directory = join("/sys/class/scsi_generic")
        let names = (try? fileManager.contentsOfDirectory(atPath: directory)) ?? []
        return names.sorted().first { name in
            guard let text = try? String(contentsOfFile: "\(directory)/\(name)/device/wwid", encoding: .utf8) else {
                return false
            }
            return Self.normalizeWWN(text) == wanted
        }
    }

    /// `wwn-0x5000C500…`, `0x5000c500…` and `naa.5000c500…` all become `naa.5000c500…`.
    static func normalizeWWN(_ text: String) -> String {
        var value = text.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        if value.hasPrefix("wwn-") { value.removeFirst(4) }
        if value.hasPrefix("0x") { value = "naa." + value.dropFirst(2) }
        return value
    }

    private func firstEntry(of directory: String) -> String? {
        (try? fileManager.contentsOfDirectory(atPath: directory))?.sorted().first
    }
}
