import Foundation
import TOMLKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension FerryConfiguration {
    /// Reads and validates a TOML configuration file (the schema is in docs/configuration.md).
    ///
    /// Relative paths in the file (`path`, `secret_file`, `state_directory`) are taken relative to
    /// the directory of the file. `defaultStateDirectory` applies when the file sets no
    /// `state_directory`.
    public static func load(
        contentsOf path: String, defaultStateDirectory: String
    ) throws(ConfigurationError) -> FerryConfiguration {
        let source: String
        do {
            source = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            let reason = (error as NSError).localizedFailureReason ?? "\(error)"
            throw ConfigurationError(problems: [.init(file: path, line: nil, message: "cannot read: \(reason)")])
        }
        var status = stat()
        let exposure =
            stat(path, &status) == 0
            ? secretExposure(of: status) : "cannot be examined: \(String(cString: strerror(errno)))"
        let directory = (path as NSString).deletingLastPathComponent
        return try FerryConfiguration(
            toml: source, fileName: path,
            baseDirectory: directory.isEmpty ? FileManager.default.currentDirectoryPath : directory,
            defaultStateDirectory: defaultStateDirectory, inlineSecretExposure: exposure.map { "\(path), which \($0)" })
    }

    /// Parses and validates TOML configuration text.
    ///
    /// - Parameters:
    ///   - fileName: names the source in problems (`ferry.toml:12: ...`).
    ///   - baseDirectory: the directory that relative paths in the text are relative to.
    ///   - defaultStateDirectory: the state directory when the text sets no `state_directory`.
    public init(
        toml source: String, fileName: String, baseDirectory: String, defaultStateDirectory: String
    ) throws(ConfigurationError) {
        try self.init(
            toml: source, fileName: fileName, baseDirectory: baseDirectory,
            defaultStateDirectory: defaultStateDirectory, inlineSecretExposure: nil)
    }

    /// - Parameter inlineSecretExposure: why the text's file must not hold an inline `secret` (it
    ///   is readable by others), or nil when it may.
    private init(
        toml source: String, fileName: String, baseDirectory: String, defaultStateDirectory: String,
        inlineSecretExposure: String?
    ) throws(ConfigurationError) {
        let root: TOMLTable
        do {
            root = try TOMLTable(string: source)
        } catch let error as TOMLParseError {
            throw ConfigurationError(problems: [
                .init(
                    file: fileName, line: error.source.begin.line,
                    message: "TOML syntax error: \(error.description) (column \(error.source.begin.column))")
            ])
        } catch {
            throw ConfigurationError(problems: [.init(file: fileName, line: nil, message: "\(error)")])
        }
        var loader = ConfigurationLoader(
            fileName: fileName, locator: SourceLocator(source: source), baseDirectory: baseDirectory,
            inlineSecretExposure: inlineSecretExposure)
        let configuration = loader.configuration(from: root, defaultStateDirectory: defaultStateDirectory)
        if !loader.problems.isEmpty {
            throw ConfigurationError(problems: loader.problems.sorted { ($0.line ?? 0) < ($1.line ?? 0) })
        }
        self = configuration
    }
}

/// Walks a parsed TOML document, builds the model and collects every problem on the way. Its sections are here, CHAP in
/// ConfigurationLoader+CHAP.swift, the typed reading of keys in ConfigurationLoader+TypedAccess.swift.
struct ConfigurationLoader {
    let fileName: String
    let locator: SourceLocator
    let baseDirectory: String
    /// Why the file must not hold an inline `secret`, or nil when it may (see ``secretExposure(of:)``).
    let inlineSecretExposure: String?
    private(set) var problems: [ConfigurationError.Problem] = []
    /// Every CHAP secret read so far, where it is and what it authenticates, in file order.
    var secretUses: [(secret: String, place: String, path: KeyPath)] = []
    var reportedInlineSecretExposure = false

    init(fileName: String, locator: SourceLocator, baseDirectory: String, inlineSecretExposure: String?) {
        self.fileName = fileName
        self.locator = locator
        self.baseDirectory = baseDirectory
        self.inlineSecretExposure = inlineSecretExposure
    }

    /// A table being read: where it is, and how messages about it begin.
    struct Node {
        var table: TOMLTable
        var path: KeyPath
        /// "target \"iqn...\" lun 0: ", or "" at the top level.
        var context: String
    }

    mutating func configuration(from root: TOMLTable, defaultStateDirectory: String) -> FerryConfiguration {
        let node = Node(table: root, path: [], context: "")
        checkKeys(
            node, allowed: ["state_directory", "portal", "discovery", "target", "limits", "control", "metrics", "alua"])

        let stateDirectory = string(node, "state_directory").map { absolute($0) } ?? defaultStateDirectory

        let portalNodes = arrayOfTables(node, "portal", header: "[[portal]]")
        if portalNodes.isEmpty && root["portal"] == nil {
            report([], #"no [[portal]]: add one, e.g. [[portal]] address = "0.0.0.0:3260""#)
        }
        let portals = portalNodes.compactMap { portal(from: $0) }
        for (index, portal) in portals.enumerated()
        where portals[..<index].contains(where: { $0.host == portal.host && $0.port == portal.port }) {
            report([.key("portal"), .index(index), .key("address")], "portal \(portal.address) is listed twice")
        }

        var discoveryAuthentication: CHAPCredentials?
        if let discovery = table(node, "discovery", context: "discovery: ") {
            checkKeys(discovery, allowed: ["chap"])
            if let chapNode = table(discovery, "chap", context: "discovery chap: ") {
                discoveryAuthentication = chap(from: chapNode)
            }
        }

        let targetNodes = arrayOfTables(node, "target", header: "[[target]]")
        if targetNodes.isEmpty && root["target"] == nil {
            report([], #"no [[target]]: add one with a name and at least one [[target.lun]]"#)
        }
        var targets: [Target] = []
        var seenNames: [String: Int] = [:]
        var seenPaths: [String: String] = [:]
        for (index, targetNode) in targetNodes.enumerated() {
            guard let target = target(from: targetNode, index: index, seenPaths: &seenPaths) else { continue }
            if seenNames[target.name] != nil {
                report(targetNode.path + [.key("name")], "target \"\(target.name)\" is defined twice")
            }
            seenNames[target.name] = index
            targets.append(target)
        }

        checkSecretReuse()

        var limits = Limits()
        if let limitsNode = table(node, "limits", context: "limits: ") { limits = self.limits(from: limitsNode) }

        var configuration = FerryConfiguration(
            portals: portals, targets: targets, stateDirectory: stateDirectory,
            discoveryAuthentication: discoveryAuthentication, limits: limits)
        if let control = table(node, "control", context: "control: ") {
            checkKeys(control, allowed: ["socket"])
            configuration.controlSocket = string(control, "socket").map { absolute($0) }
        }
        if let metrics = table(node, "metrics", context: "metrics: ") { configuration.metricsAddress = self.metrics(metrics) }
        if let alua = table(node, "alua", context: "alua: ") {
            configuration.gateways = gateways(alua, portals: portals)
        }
        return configuration
    }

    /// `[alua] port_groups = [1, 2]`: every gateway's portal group tag, distinct, this gateway's portals' among them;
    /// `takeover_after`, 2 s to 10 min.
    private mutating func gateways(_ node: Node, portals: [Portal]) -> Gateways? {
        checkKeys(node, allowed: ["port_groups", "takeover_after"])
        let takeoverAfter = milliseconds(node, "takeover_after", in: 2_000...600_000) ?? Gateways.defaultTakeoverAfter
        guard let value = value(node, "port_groups", required: true) else { return nil }
        let numbers = value.array?.compactMap { $0.int }
        guard let numbers, numbers.count == value.array?.count, !numbers.isEmpty,
            numbers.allSatisfy({ (1...65_535).contains($0) })
        else {
            report(node.path + [.key("port_groups")], "alua: port_groups must be a list of portal group tags, 1 to 65535")
            return nil
        }
        let groups = numbers.map { UInt16($0) }
        if Set(groups).count != groups.count {
            report(node.path + [.key("port_groups")], "alua: port_groups lists a portal group tag twice")
        }
        for portal in portals where !groups.contains(portal.portalGroupTag) {
            report(
                node.path + [.key("port_groups")],
                "alua: port_groups must list this gateway's portal group tag \(portal.portalGroupTag) (portal \(portal.address))")
        }
        return Gateways(portGroups: groups, takeoverAfter: takeoverAfter)
    }

    /// `[metrics] address = "127.0.0.1:9380"`: a port is required (3260 is not a default here).
    private mutating func metrics(_ node: Node) -> ListenAddress? {
        checkKeys(node, allowed: ["address"])
        guard let address = string(node, "address", required: true) else { return nil }
        switch PortalAddress.parse(address) {
        case .success(let parsed) where address.hasSuffix(":\(parsed.port)"):
            return ListenAddress(host: parsed.host, port: parsed.port)
        case .success:
            report(node.path + [.key("address")], "metrics: address \"\(address)\" needs a port, e.g. \"127.0.0.1:9380\"")
        case .failure(let problem):
            report(node.path + [.key("address")], "metrics: address \"\(address)\" \(problem.message)")
        }
        return nil
    }

    // MARK: - Sections

    private mutating func portal(from node: Node) -> Portal? {
        checkKeys(node, allowed: ["address", "portal_group_tag"])
        let tag = integer(node, "portal_group_tag", in: 1...65_535) ?? 1
        guard let address = string(node, "address", required: true) else { return nil }
        switch PortalAddress.parse(address) {
        case .success(let parsed):
            return Portal(host: parsed.host, port: parsed.port, portalGroupTag: UInt16(tag))
        case .failure(let problem):
            report(node.path + [.key("address")], "\(node.context)address \"\(address)\" \(problem.message)")
            return nil
        }
    }

    private mutating func target(from node: Node, index: Int, seenPaths: inout [String: String]) -> Target? {
        checkKeys(node, allowed: ["name", "alias", "allowed_initiators", "chap", "mutual_chap", "lun"])
        let name = string(node, "name", required: true)
        var node = node
        if let name {
            if let problem = ISCSIName.problem(in: name) {
                report(node.path + [.key("name")], "target name \"\(name)\" \(problem)")
            }
            node.context = "target \"\(name)\": "
        } else {
            node.context = "target \(index + 1): "
        }

        let alias = string(node, "alias")
        if let alias,
            alias.utf8.count > 255
                || alias.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        {
            report(
                node.path + [.key("alias")], "\(node.context)alias must be at most 255 bytes without control characters"
            )
        }

        let initiators = stringArray(node, "allowed_initiators") ?? []
        for (position, initiator) in initiators.enumerated() {
            if let problem = ISCSIName.problem(in: initiator) {
                report(
                    node.path + [.key("allowed_initiators")],
                    "\(node.context)initiator name \"\(initiator)\" \(problem)")
            } else if initiators[..<position].contains(initiator) {
                report(
                    node.path + [.key("allowed_initiators")],
                    "\(node.context)initiator \"\(initiator)\" is listed twice")
            }
        }

        let chapNode = table(node, "chap", context: node.context + "chap: ")
        let chap = chapNode.flatMap { self.chap(from: $0) }
        let mutualCHAPNode = table(node, "mutual_chap", context: node.context + "mutual_chap: ")
        let mutualCHAP = mutualCHAPNode.flatMap { self.chap(from: $0) }
        if let mutualCHAPNode, node.table["chap"] == nil {
            report(
                mutualCHAPNode.path,
                "\(node.context)mutual_chap needs [target.chap]: the initiator authenticates first")
        }

        let lunNodes = arrayOfTables(node, "lun", header: "[[target.lun]]")
        if lunNodes.isEmpty && node.table["lun"] == nil {
            report(node.path, "\(node.context)has no [[target.lun]]")
        }
        var luns: [LogicalUnit] = []
        for lunNode in lunNodes {
            guard let lun = logicalUnit(from: lunNode, targetContext: node.context) else { continue }
            if luns.contains(where: { $0.lun == lun.lun }) {
                report(lunNode.path + [.key("lun")], "\(node.context)lun \(lun.lun) is defined twice")
            } else if lun.backend == .null {
                // No storage, so no path that another LUN could share.
            } else if lun.backend == .rbd, let image = lun.rbd, let other = seenPaths["rbd:" + image.spec] {
                report(lunNode.path + [.key("image")], "\(node.context)lun \(lun.lun): \(image.spec) already backs \(other)")
            } else if lun.backend == .rbd, let image = lun.rbd {
                seenPaths["rbd:" + image.spec] = "\(node.context.dropLast(2)) lun \(lun.lun)"
            } else if let other = seenPaths[lun.path] {
                report(
                    lunNode.path + [.key("path")], "\(node.context)lun \(lun.lun): \(lun.path) already backs \(other)")
            } else {
                seenPaths[lun.path] = "\(node.context.dropLast(2)) lun \(lun.lun)"
            }
            luns.append(lun)
        }

        guard let name, ISCSIName.problem(in: name) == nil else { return nil }
        return Target(
            name: name, alias: alias, luns: luns, allowedInitiators: initiators, chap: chap, mutualCHAP: mutualCHAP)
    }

    /// The highest LUN with SAM-5 flat space addressing (14 bits).
    static let maximumLUN = 16_383

    /// The keys of `[[target.lun]]` that only some backends take, and the backends that take each; with any other
    /// backend the key is an error. `lun` and `backend` apply to every LUN.
    static let backendKeys: [(key: String, backends: [LogicalUnit.Backend])] = [
        ("path", [.emulated, .sg]),
        // An RBD image has the size it was created with (`rbd create --size`, `rbd resize`).
        ("size", [.emulated, .null]),
        ("block_size", [.emulated, .null, .rbd]),
        ("read_only", [.emulated, .null, .rbd]),
        ("vendor", [.emulated, .null, .rbd]),
        ("product", [.emulated, .null, .rbd]),
        ("serial", [.emulated, .null, .rbd]),
        ("write_cache", [.emulated, .null, .rbd]),
        // SANITIZE OVERWRITE of a null LUN writes nothing: there is no bandwidth to leave to the others.
        ("sanitize_rate", [.emulated, .rbd]),
        ("command_timeout", [.sg]),
        ("abort_deadline", [.sg]),
        ("reset_device", [.sg]),
        ("pool", [.rbd]),
        ("image", [.rbd]),
        ("namespace", [.rbd]),
        ("ceph_conf", [.rbd]),
        ("client_id", [.rbd]),
        ("keyring", [.rbd]),
    ]

    private mutating func logicalUnit(from node: Node, targetContext: String) -> LogicalUnit? {
        var node = node
        node.context = targetContext
        let number = integer(node, "lun", in: 0...Self.maximumLUN, required: true)
        node.context = "\(targetContext.dropLast(2)) lun \(number.map(String.init) ?? "?"): "
        checkKeys(
            node,
            allowed: [
                "lun", "path", "backend", "size", "block_size", "read_only", "vendor", "product", "serial",
                "write_cache", "command_timeout", "sanitize_rate", "abort_deadline", "reset_device",
                "pool", "image", "namespace", "ceph_conf", "client_id", "keyring",
            ])
        let defaults = LogicalUnit(lun: 0, path: "")

        var named: LogicalUnit.Backend?
        if let name = string(node, "backend") {
            named = LogicalUnit.Backend(rawValue: name)
            if named == nil {
                report(
                    node.path + [.key("backend")],
                    "\(node.context)backend \"\(name)\" is unknown; use \"emulated\", \"sg\", \"rbd\" or \"null\"")
            }
        }
        // A null LUN has no storage and an RBD LUN names its image otherwise: neither needs a path, and one given is
        // an error below.
        let configuredPath = named == .null || named == .rbd ? nil : string(node, "path", required: true)
        let isWorldWideName = configuredPath.map(LogicalUnit.Backend.isWorldWideName) ?? false
        let path = isWorldWideName ? configuredPath : configuredPath.map { absolute($0) }
        let backend = named ?? path.map { .automatic(for: LogicalUnit.Backend.classify($0)) } ?? .emulated
        let commandTimeout = milliseconds(node, "command_timeout", in: 1_000...600_000)
        let abortDeadline = milliseconds(node, "abort_deadline", in: 100...600_000)
        let resetDevice = bool(node, "reset_device")
        for (key, backends) in Self.backendKeys where !backends.contains(backend) && node.table[key] != nil {
            if key == "path", backend == .rbd {
                report(
                    node.path + [.key(key)],
                    "\(node.context)path does not apply to backend \"rbd\"; name the image with pool and image")
                continue
            }
            if key == "path" {
                report(
                    node.path + [.key(key)],
                    "\(node.context)path does not apply to backend \"\(backend.rawValue)\", which stores nothing"
                        + " (reads return zeroes, writes are discarded); remove it")
                continue
            }
            let names = backends.map { "\"\($0.rawValue)\"" }
            let accepting =
                names.count == 1
                ? "backend \(names[0])" : "backends \(names.dropLast().joined(separator: ", ")) and \(names[names.count - 1])"
            report(
                node.path + [.key(key)],
                "\(node.context)\(key) applies only to \(accepting) (this LUN's is \"\(backend.rawValue)\")")
        }

        let blockSize = integer(node, "block_size", in: 0...Int.max) ?? defaults.blockSize
        if blockSize != 512 && blockSize != 4096 {
            report(node.path + [.key("block_size")], "\(node.context)block_size must be 512 or 4096")
        }

        let size = byteCount(node, "size")
        if let size, blockSize > 0, size % UInt64(blockSize) != 0 {
            report(
                node.path + [.key("size")], "\(node.context)size \(size) is not a multiple of block_size \(blockSize)")
        }
        // A size of its own that is wrong (0, not a number) was reported above.
        if backend == .null, node.table["size"] == nil {
            report(
                node.path,
                "\(node.context)size is missing: backend \"null\" needs the LUN's capacity, e.g. size = \"16G\"")
        }

        if let path, path.isEmpty {
            report(node.path + [.key("path")], "\(node.context)path is empty")
        } else if let path, backend == .sg, !isWorldWideName, !FileManager.default.fileExists(atPath: path) {
            report(node.path + [.key("path")], "\(node.context)\(path) does not exist")
        } else if let path, backend == .emulated, !path.hasPrefix("/dev/"), isSymbolicLink(path) {
            // The emulated backend opens its file with O_NOFOLLOW (FileBlockStore); under /dev, udev's
            // links to block devices are followed.
            report(
                node.path + [.key("path")],
                "\(node.context)\(path) is a symbolic link; give the file itself"
                    + " (Ferry follows links only under /dev, to device nodes)")
        } else if let path, backend == .emulated, size == nil, !FileManager.default.fileExists(atPath: path) {
            report(
                node.path + [.key("path")],
                "\(node.context)\(path) does not exist; give a size to create it as a sparse file")
        }

        let vendor = identification(node, "vendor", maximumLength: 8) ?? defaults.vendor
        let product = identification(node, "product", maximumLength: 16) ?? defaults.product
        let serial = identification(node, "serial", maximumLength: 64)
        let readOnly = bool(node, "read_only") ?? defaults.readOnly
        let writeCache = bool(node, "write_cache") ?? LogicalUnit.defaultWriteCache(for: backend)
        let sanitizeRate = byteCount(node, "sanitize_rate")

        let rbd = backend == .rbd ? rbdImage(from: node) : nil

        guard let number, let path = path ?? (backend == .null ? "" : rbd?.spec) else { return nil }
        return LogicalUnit(
            lun: UInt64(number), path: path, backend: backend, size: size, blockSize: blockSize, readOnly: readOnly,
            vendor: vendor, product: product, serial: serial, writeCache: writeCache,
            commandTimeout: commandTimeout ?? defaults.commandTimeout, sanitizeRate: sanitizeRate,
            abortDeadline: abortDeadline ?? defaults.abortDeadline, resetDevice: resetDevice ?? defaults.resetDevice,
            rbd: rbd)
    }

    /// The image of an RBD LUN: `pool` and `image` (required), `namespace`, `ceph_conf` and `keyring` (which must
    /// exist), `client_id`.
    private mutating func rbdImage(from node: Node) -> LogicalUnit.RBDImage? {
        // RADOS pool and namespace names and RBD image names may hold anything but "/", which separates them in a
        // spec, and NUL.
        func name(_ key: String, required: Bool) -> String? {
            guard let value = string(node, key, required: required) else { return nil }
            guard !value.isEmpty || !required, !value.contains("/"), !value.contains("\0") else {
                report(node.path + [.key(key)], "\(node.context)\(key) must be a name without \"/\"")
                return nil
            }
            return value
        }
        func existingFile(_ key: String) -> String? {
            guard let value = string(node, key) else { return nil }
            let path = absolute(value)
            guard FileManager.default.fileExists(atPath: path) else {
                report(node.path + [.key(key)], "\(node.context)\(key) \(path) does not exist")
                return nil
            }
            return path
        }
        let pool = name("pool", required: true)
        let image = name("image", required: true)
        let namespace = name("namespace", required: false) ?? ""
        // The default ceph.conf is looked for when the LUN opens: a gateway may be configured before Ceph is.
        let cephConf = node.table["ceph_conf"] == nil ? LogicalUnit.RBDImage.defaultCephConf : existingFile("ceph_conf")
        let keyring = existingFile("keyring")
        let clientID = string(node, "client_id") ?? LogicalUnit.RBDImage.defaultClientID
        if clientID.isEmpty || clientID.hasPrefix("client.") {
            report(
                node.path + [.key("client_id")],
                "\(node.context)client_id is the id alone, e.g. \"admin\" for client.admin")
        }
        guard let pool, let image, let cephConf, node.table["keyring"] == nil || keyring != nil else { return nil }
        return LogicalUnit.RBDImage(
            pool: pool, image: image, namespace: namespace, cephConf: cephConf, clientID: clientID, keyring: keyring)
    }

    private mutating func limits(from node: Node) -> Limits {
        let fields = Limits.keys
        checkKeys(node, allowed: fields.map(\.key))
        var limits = Limits()
        for field in fields {
            if let value = integer(node, field.key, in: field.range) { limits[keyPath: field.field] = value }
        }
        if limits.firstBurstLength > limits.maxBurstLength {
            report(
                node.path + [.key("first_burst_length")], "limits: first_burst_length must not exceed max_burst_length")
        }
        return limits
    }

    // MARK: - Problems

    mutating func report(_ path: KeyPath, _ message: String) {
        problems.append(.init(file: fileName, line: locator.line(of: path), message: message))
    }
}

extension Limits {
    /// The keys of `[limits]`, their ranges and fields, for the loader and the writer.
    static var keys: [(key: String, range: ClosedRange<Int>, field: WritableKeyPath<Limits, Int>)] {
        [
            // RFC 7143 §13.12, §13.13, §13.14: 512 to 2^24-1.
            ("max_recv_data_segment_length", 512...16_777_215, \.maxRecvDataSegmentLength),
            ("max_burst_length", 512...16_777_215, \.maxBurstLength),
            ("first_burst_length", 512...16_777_215, \.firstBurstLength),
            ("max_outstanding_r2t", 1...65_535, \.maxOutstandingR2T),
            ("command_window", 1...65_535, \.commandWindow),
            ("max_sessions", 1...65_535, \.maxSessions),
            ("max_discovery_sessions", 1...65_535, \.maxDiscoverySessions),
            ("max_sessions_per_initiator", 1...65_535, \.maxSessionsPerInitiator),
            ("max_connections_per_session", 1...65_535, \.maxConnectionsPerSession),
            ("max_logins_in_progress", 1...65_535, \.maxLoginsInProgress),
            ("max_logins_in_progress_per_address", 1...65_535, \.maxLoginsInProgressPerAddress),
            ("login_timeout", 1...3600, \.loginTimeout),
            ("nop_in_interval", 1...3600, \.nopInInterval),
            ("nop_in_timeout", 1...3600, \.nopInTimeout),
            ("max_data_buffer_mib", 16...1_048_576, \.maxDataBufferMiB),
            ("metrics_request_timeout", 1...3600, \.metricsRequestTimeout),
            ("max_metrics_connections", 1...1024, \.maxMetricsConnections),
        ]
    }
}
