import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension FerryConfiguration {
    /// The configuration as a TOML file that ``load(contentsOf:defaultStateDirectory:)`` reads back to an equal
    /// configuration (`ferryctl save-config`).
    ///
    /// Keys at their default are left out; paths are written absolute; a CHAP secret read from a `secret_file` is
    /// written as that `secret_file`, never as the secret. Comments and the layout of the file the configuration
    /// came from are not kept: the model does not hold them.
    ///
    /// - Parameter defaultStateDirectory: the state directory the loader assumes without `state_directory`; the key
    ///   is written only when the configuration's differs.
    public func toml(defaultStateDirectory: String? = nil) -> String {
        var writer = TOMLWriter()
        if stateDirectory != defaultStateDirectory { writer.key("state_directory", stateDirectory) }
        for portal in portals {
            writer.header("[[portal]]")
            writer.key("address", portal.address)
            if portal.portalGroupTag != 1 { writer.key("portal_group_tag", Int(portal.portalGroupTag)) }
        }
        if let discoveryAuthentication {
            writer.header("[discovery.chap]")
            writer.chap(discoveryAuthentication)
        }
        writer.limits(limits)
        if let controlSocket {
            writer.header("[control]")
            writer.key("socket", controlSocket)
        }
        if let gateways {
            writer.header("[alua]")
            writer.key("port_groups", gateways.portGroups.map(Int.init))
            if gateways.takeoverAfter != Gateways.defaultTakeoverAfter {
                writer.key("takeover_after", gateways.takeoverAfter)
            }
        }
        if let metricsAddress {
            writer.header("[metrics]")
            let host = metricsAddress.host.contains(":") ? "[\(metricsAddress.host)]" : metricsAddress.host
            writer.key("address", "\(host):\(metricsAddress.port)")
        }
        for target in targets {
            writer.header("[[target]]")
            writer.key("name", target.name)
            if let alias = target.alias { writer.key("alias", alias) }
            if !target.allowedInitiators.isEmpty { writer.key("allowed_initiators", target.allowedInitiators) }
            if let chap = target.chap {
                writer.header("[target.chap]")
                writer.chap(chap)
            }
            if let mutualCHAP = target.mutualCHAP {
                writer.header("[target.mutual_chap]")
                writer.chap(mutualCHAP)
            }
            for lun in target.luns { writer.logicalUnit(lun) }
        }
        return writer.text
    }

    /// Replaces the file at `path` with ``toml(defaultStateDirectory:)`` atomically: the text goes to a temporary
    /// file in the same directory, with the mode and owner of the file it replaces (0600 for a new one), is synced
    /// to disk and renamed over `path`; the directory is synced too. A failure leaves the old file as it was.
    ///
    /// A file that holds an inline secret loses the group and other bits of the mode it replaces: the loader
    /// refuses such a file when others can read it.
    public func save(to path: String, defaultStateDirectory: String? = nil) throws(SaveError) {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary =
            (directory.isEmpty ? "." : directory) + "/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        var existing = stat()
        let replacing = stat(path, &existing) == 0
        unlink(temporary)  // left by a ferryd that died while saving, with the same process ID
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw SaveError(operation: "create", path: temporary) }
        var written = false
        defer {
            close(descriptor)
            if !written { unlink(temporary) }
        }
        if replacing {
            // Keep the file's owner (root can; anyone else keeps their own) and mode.
            _ = fchown(descriptor, existing.st_uid, existing.st_gid)
            let mode = existing.st_mode & (holdsInlineSecrets ? 0o7700 : 0o7777)
            guard fchmod(descriptor, mode) == 0 else {
                throw SaveError(operation: "set the mode of", path: temporary)
            }
        }
        let bytes = Array(toml(defaultStateDirectory: defaultStateDirectory).utf8)
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw SaveError(operation: "write", path: temporary) }
            offset += count
        }
        guard fsync(descriptor) == 0 else { throw SaveError(operation: "sync", path: temporary) }
        guard rename(temporary, path) == 0 else { throw SaveError(operation: "rename over", path: path) }
        written = true
        let directoryDescriptor = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryDescriptor >= 0 {
            fsync(directoryDescriptor)
            close(directoryDescriptor)
        }
    }

    /// Whether ``toml(defaultStateDirectory:)`` writes a CHAP secret itself, not the `secret_file` it came from.
    public var holdsInlineSecrets: Bool {
        let credentials = [discoveryAuthentication] + targets.flatMap { [$0.chap, $0.mutualCHAP] }
        return credentials.contains { $0 != nil && $0?.secretFile == nil }
    }

    /// Why the configuration could not be saved; the file stays as it was.
    public struct SaveError: Error, CustomStringConvertible {
        public var description: String

        init(operation: String, path: String) {
            description = "cannot \(operation) \(path): \(String(cString: strerror(errno)))"
        }
    }
}

/// Builds TOML text: `key = value` lines and table headers, strings escaped as TOML basic strings.
private struct TOMLWriter {
    private(set) var text = ""

    mutating func header(_ header: String) {
        text += (text.isEmpty ? "" : "\n") + header + "\n"
    }

    mutating func key(_ key: String, _ value: String) { text += "\(key) = \(Self.quoted(value))\n" }
    mutating func key(_ key: String, _ value: Int) { text += "\(key) = \(value)\n" }
    mutating func key(_ key: String, _ value: UInt64) { text += "\(key) = \(value)\n" }
    mutating func key(_ key: String, _ value: Bool) { text += "\(key) = \(value)\n" }
    mutating func key(_ key: String, _ values: [Int]) {
        text += "\(key) = [\(values.map(String.init).joined(separator: ", "))]\n"
    }
    mutating func key(_ key: String, _ values: [String]) {
        text += "\(key) = [\(values.map(Self.quoted).joined(separator: ", "))]\n"
    }

    mutating func chap(_ credentials: CHAPCredentials) {
        key("user", credentials.user)
        if let file = credentials.secretFile {
            key("secret_file", file)
        } else {
            key("secret", credentials.secret)
        }
    }

    mutating func limits(_ limits: Limits) {
        let defaults = Limits()
        let changed = Limits.keys.filter { limits[keyPath: $0.field] != defaults[keyPath: $0.field] }
        guard !changed.isEmpty else { return }
        header("[limits]")
        for field in changed { key(field.key, limits[keyPath: field.field]) }
    }

    mutating func logicalUnit(_ lun: LogicalUnit) {
        let defaults = LogicalUnit(lun: 0, path: "")
        header("[[target.lun]]")
        key("lun", lun.lun)
        // A null LUN has no path, and an RBD LUN's is its image spec (the loader refuses both).
        if lun.backend != .null && lun.backend != .rbd { key("path", lun.path) }
        key("backend", lun.backend.rawValue)
        switch lun.backend {
        case .sg:
            if lun.commandTimeout != defaults.commandTimeout { key("command_timeout", lun.commandTimeout) }
            if lun.abortDeadline != defaults.abortDeadline { key("abort_deadline", lun.abortDeadline) }
            if !lun.resetDevice { key("reset_device", false) }
        case .emulated, .null, .rbd:
            if let image = lun.rbd {
                key("pool", image.pool)
                key("image", image.image)
                if !image.namespace.isEmpty { key("namespace", image.namespace) }
                if image.cephConf != LogicalUnit.RBDImage.defaultCephConf { key("ceph_conf", image.cephConf) }
                if image.clientID != LogicalUnit.RBDImage.defaultClientID { key("client_id", image.clientID) }
                if let keyring = image.keyring { key("keyring", keyring) }
            }
            if let size = lun.size { key("size", size) }
            if lun.blockSize != defaults.blockSize { key("block_size", lun.blockSize) }
            if lun.readOnly { key("read_only", true) }
            if lun.vendor != defaults.vendor { key("vendor", lun.vendor) }
            if lun.product != defaults.product { key("product", lun.product) }
            if let serial = lun.serial { key("serial", serial) }
            if lun.writeCache != LogicalUnit.defaultWriteCache(for: lun.backend) { key("write_cache", lun.writeCache) }
            // The loader takes sanitize_rate for the emulated disk only.
            if lun.backend != .null, let rate = lun.sanitizeRate { key("sanitize_rate", rate) }
        }
    }

    /// A TOML basic string: `"`, `\` and control characters escaped (TOML 1.0, "String").
    static func quoted(_ value: String) -> String {
        var result = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                result += String(format: "\\u%04X", scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
