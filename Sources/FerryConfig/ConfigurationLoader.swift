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

/// Walks a parsed TOML document, builds the model and collects every problem on the way.
private struct ConfigurationLoader {
    let fileName: String
    let locator: SourceLocator
    let baseDirectory: String
    /// Why the file must not hold an inline `secret`, or nil when it may (see ``secretExposure(of:)``).
    let inlineSecretExposure: String?
    private(set) var problems: [ConfigurationError.Problem] = []
    /// Every CHAP secret read so far, where it is and what it authenticates, in file order.
    private var secretUses: [(secret: String, place: String, path: KeyPath)] = []
    private var reportedInlineSecretExposure = false

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
        checkKeys(node, allowed: ["state_directory", "portal", "discovery", "target", "limits", "control", "metrics"])

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
        return configuration
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
            ])
        let defaults = LogicalUnit(lun: 0, path: "")

        var named: LogicalUnit.Backend?
        if let name = string(node, "backend") {
            named = LogicalUnit.Backend(rawValue: name)
            if named == nil {
                report(
                    node.path + [.key("backend")],
                    "\(node.context)backend \"\(name)\" is unknown; use \"sg\" or \"emulated\"")
            }
        }
        let configuredPath = string(node, "path", required: true)
        let isWorldWideName = configuredPath.map(LogicalUnit.Backend.isWorldWideName) ?? false
        let path = isWorldWideName ? configuredPath : configuredPath.map { absolute($0) }
        let backend = named ?? path.map { .automatic(for: LogicalUnit.Backend.classify($0)) } ?? .emulated
        let commandTimeout = milliseconds(node, "command_timeout", in: 1_000...600_000)
        let abortDeadline = milliseconds(node, "abort_deadline", in: 100...600_000)
        let resetDevice = bool(node, "reset_device")
        let (otherBackend, otherKeys): (LogicalUnit.Backend, [String]) =
            backend == .sg
            ? (
                .emulated,
                ["size", "block_size", "read_only", "vendor", "product", "serial", "write_cache", "sanitize_rate"]
            )
            : (.sg, ["command_timeout", "abort_deadline", "reset_device"])
        for key in otherKeys where node.table[key] != nil {
            report(
                node.path + [.key(key)],
                "\(node.context)\(key) applies only to backend \"\(otherBackend.rawValue)\""
                    + " (this LUN's is \"\(backend.rawValue)\")")
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
        let writeCache = bool(node, "write_cache") ?? defaults.writeCache
        let sanitizeRate = byteCount(node, "sanitize_rate")

        guard let number, let path else { return nil }
        return LogicalUnit(
            lun: UInt64(number), path: path, backend: backend, size: size, blockSize: blockSize, readOnly: readOnly,
            vendor: vendor, product: product, serial: serial, writeCache: writeCache,
            commandTimeout: commandTimeout ?? defaults.commandTimeout, sanitizeRate: sanitizeRate,
            abortDeadline: abortDeadline ?? defaults.abortDeadline, resetDevice: resetDevice ?? defaults.resetDevice)
    }

    /// The smallest CHAP secret without IPsec: RFC 7143 §9.2.1 asks for IPsec below 96 random bits.
    static let minimumSecretLength = 12

    private mutating func chap(from node: Node) -> CHAPCredentials? {
        checkKeys(node, allowed: ["user", "secret", "secret_file"])
        let user = string(node, "user", required: true)
        if let user, user.isEmpty {
            report(node.path + [.key("user")], "\(node.context)user is empty")
        }
        let inline = string(node, "secret")
        let file = string(node, "secret_file")
        var secret: String?
        switch (inline, file) {
        case (nil, nil):
            report(node.path, "\(node.context)give secret or secret_file")
        case (.some, .some):
            report(node.path + [.key("secret_file")], "\(node.context)give secret or secret_file, not both")
        case (let inline?, nil):
            secret = inline
        case (nil, let file?):
            secret = readSecretFile(absolute(file), node: node)
        }
        if inline != nil, let inlineSecretExposure, !reportedInlineSecretExposure {
            // Reported once, at the first inline secret: the remedy is the same for all of them.
            reportedInlineSecretExposure = true
            report(
                node.path + [.key("secret")],
                "\(node.context)secret is inline in \(inlineSecretExposure), or move the secret to a secret_file")
        }
        if let secret, secret.utf8.count < Self.minimumSecretLength {
            report(
                node.path + [.key(file == nil ? "secret" : "secret_file")],
                "\(node.context)the secret must be at least \(Self.minimumSecretLength) bytes (RFC 7143 §9.2.1)")
            return nil
        }
        guard let user, let secret else { return nil }
        let secretKey = node.path + [.key(file == nil ? "secret" : "secret_file")]
        secretUses.append((secret, String(node.context.dropLast(2)), secretKey))
        return CHAPCredentials(user: user, secret: secret, secretFile: file.map { absolute($0) })
    }

    /// Each CHAP secret may authenticate one party in one place: a secret shared by two places lets
    /// a party that knows it for one of them pass the other, e.g. by reflecting a target's challenge
    /// through a mutual CHAP exchange.
    private mutating func checkSecretReuse() {
        for (index, use) in secretUses.enumerated() {
            guard let first = secretUses[..<index].first(where: { $0.secret == use.secret }) else { continue }
            let firstLine = locator.line(of: first.path).map { " (line \($0))" } ?? ""
            // > Any CHAP secret used for initiator authentication MUST NOT be configured for
            // > authentication of any target, and any CHAP secret used for target authentication
            // > MUST NOT be configured for authentication of any initiator. (RFC 7143 §9.2.1)
            report(
                use.path,
                "\(use.place): the same secret as \(first.place)\(firstLine); give each its own secret."
                    + " RFC 7143 §9.2.1: \"Any CHAP secret used for initiator authentication MUST NOT be configured"
                    + " for authentication of any target\"")
        }
    }

    private mutating func readSecretFile(_ path: String, node: Node) -> String? {
        let keyPath = node.path + [.key("secret_file")]
        var status = stat()
        guard stat(path, &status) == 0 else {
            report(keyPath, "\(node.context)cannot read secret_file \(path): \(String(cString: strerror(errno)))")
            return nil
        }
        if let exposure = secretExposure(of: status) {
            report(keyPath, "\(node.context)secret_file \(path) \(exposure)")
            return nil
        }
        guard let contents = FileManager.default.contents(atPath: path) else {
            report(keyPath, "\(node.context)cannot read secret_file \(path)")
            return nil
        }
        var secret = String(decoding: contents, as: UTF8.self)
        while secret.hasSuffix("\n") || secret.hasSuffix("\r") { secret.removeLast() }
        return secret
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

    // MARK: - Typed access

    private mutating func report(_ path: KeyPath, _ message: String) {
        problems.append(.init(file: fileName, line: locator.line(of: path), message: message))
    }

    private mutating func checkKeys(_ node: Node, allowed: [String]) {
        for key in node.table.keys.sorted() where !allowed.contains(key) {
            var message = "\(node.context)unknown key \"\(key)\""
            if let suggestion = allowed.min(by: { editDistance($0, key) < editDistance($1, key) }),
                editDistance(suggestion, key) <= 2
            {
                message += " (did you mean \"\(suggestion)\"?)"
            }
            report(node.path + [.key(key)], message)
        }
    }

    private mutating func value(_ node: Node, _ key: String, required: Bool) -> (any TOMLValueConvertible)? {
        guard let value = node.table[key] else {
            if required { report(node.path, "\(node.context)\(key) is missing") }
            return nil
        }
        return value
    }

    private mutating func string(_ node: Node, _ key: String, required: Bool = false) -> String? {
        guard let value = value(node, key, required: required) else { return nil }
        guard let string = value.string else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be a string")
            return nil
        }
        return string
    }

    private mutating func bool(_ node: Node, _ key: String) -> Bool? {
        guard let value = value(node, key, required: false) else { return nil }
        guard let bool = value.bool else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be true or false")
            return nil
        }
        return bool
    }

    private mutating func integer(
        _ node: Node, _ key: String, in range: ClosedRange<Int>, required: Bool = false
    ) -> Int? {
        guard let value = value(node, key, required: required) else { return nil }
        guard let integer = value.int else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be an integer")
            return nil
        }
        guard range.contains(integer) else {
            report(
                node.path + [.key(key)], "\(node.context)\(key) must be in \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return integer
    }

    /// A size: an integer number of bytes, or a string with a binary unit K, M, G or T ("1G").
    private mutating func byteCount(_ node: Node, _ key: String) -> UInt64? {
        guard let value = value(node, key, required: false) else { return nil }
        let keyPath = node.path + [.key(key)]
        if let integer = value.int {
            guard integer > 0 else {
                report(keyPath, "\(node.context)\(key) must be positive")
                return nil
            }
            return UInt64(integer)
        }
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        guard var text = value.string else {
            report(keyPath, "\(node.context)\(key) must be a number of bytes or a string such as \"1G\"")
            return nil
        }
        var multiplier: UInt64 = 1
        if let last = text.last, let unit = units[Character(last.uppercased())] {
            multiplier = unit
            text.removeLast()
        }
        guard let number = UInt64(text), number > 0 else {
            report(
                keyPath,
                "\(node.context)\(key) \"\(value.string ?? "")\" must be a positive number"
                    + " with an optional unit K, M, G or T"
            )
            return nil
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: multiplier)
        guard !overflow, bytes <= UInt64(Int64.max) else {
            report(keyPath, "\(node.context)\(key) is too large")
            return nil
        }
        return bytes
    }

    /// A duration in milliseconds: an integer number of milliseconds, or a string with the unit
    /// `ms` or `s` ("500ms", "20s").
    private mutating func milliseconds(_ node: Node, _ key: String, in range: ClosedRange<Int>) -> Int? {
        guard let value = value(node, key, required: false) else { return nil }
        let keyPath = node.path + [.key(key)]
        var milliseconds = value.int
        if milliseconds == nil, let text = value.string {
            if text.hasSuffix("ms") {
                milliseconds = Int(text.dropLast(2))
            } else if text.hasSuffix("s") {
                milliseconds = Int(text.dropLast()).flatMap { $0 <= Int.max / 1000 ? $0 * 1000 : nil }
            }
        }
        guard let milliseconds else {
            report(keyPath, "\(node.context)\(key) must be milliseconds, or a string such as \"20s\" or \"500ms\"")
            return nil
        }
        guard range.contains(milliseconds) else {
            report(
                keyPath,
                "\(node.context)\(key) must be in \(range.lowerBound)...\(range.upperBound) milliseconds")
            return nil
        }
        return milliseconds
    }

    /// INQUIRY identification text: printable ASCII (SPC-4 §4.3.1) of at most `maximumLength` bytes.
    private mutating func identification(_ node: Node, _ key: String, maximumLength: Int) -> String? {
        guard let text = string(node, key) else { return nil }
        guard !text.isEmpty, text.utf8.count <= maximumLength, text.utf8.allSatisfy({ (0x20...0x7E).contains($0) })
        else {
            report(
                node.path + [.key(key)],
                "\(node.context)\(key) must be 1 to \(maximumLength) printable ASCII characters")
            return nil
        }
        return text
    }

    private mutating func stringArray(_ node: Node, _ key: String) -> [String]? {
        guard let value = value(node, key, required: false) else { return nil }
        guard let array = value.array, let strings = Optional(array.compactMap(\.string)), strings.count == array.count
        else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be an array of strings")
            return nil
        }
        return strings
    }

    private mutating func table(_ node: Node, _ key: String, context: String) -> Node? {
        guard let value = value(node, key, required: false) else { return nil }
        guard let table = value.table else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be a table")
            return nil
        }
        return Node(table: table, path: node.path + [.key(key)], context: context)
    }

    private mutating func arrayOfTables(_ node: Node, _ key: String, header: String) -> [Node] {
        guard let value = value(node, key, required: false) else { return [] }
        guard let array = value.array, array.allSatisfy({ $0.table != nil }) else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be an array of tables: write \(header)")
            return []
        }
        return array.enumerated().map { index, element in
            Node(table: element.table!, path: node.path + [.key(key), .index(index)], context: node.context)
        }
    }

    private func isSymbolicLink(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFLNK
    }

    private func absolute(_ path: String) -> String {
        path.hasPrefix("/") || path.isEmpty ? path : (baseDirectory as NSString).appendingPathComponent(path)
    }
}

/// Why a file with `status` must not hold a secret: readable by group or others, or owned by
/// someone else than root and the user running ferryd; nil when it may.
private func secretExposure(of status: stat) -> String? {
    if status.st_mode & 0o077 != 0 {
        return "is accessible by group or others (mode \(String(status.st_mode & 0o777, radix: 8))); chmod 600 it"
    }
    if status.st_uid != 0 && status.st_uid != geteuid() {
        return "must be owned by root or by the user running ferryd"
    }
    return nil
}

/// A portal address as written in the file: `127.0.0.1:3260`, `[::1]:3260`, `0.0.0.0` (port 3260).
struct PortalAddress: Hashable {
    var host: String
    var port: Int

    struct Problem: Error {
        var message: String
    }

    /// The IANA-assigned iSCSI port (RFC 7143 §13.1).
    static let wellKnownPort = 3260

    static func parse(_ text: String) -> Result<PortalAddress, Problem> {
        var host = Substring(text)
        var portText: Substring?
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else {
                return .failure(Problem(message: "has \"[\" without \"]\""))
            }
            let after = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return .failure(Problem(message: "has text after \"]\"")) }
                portText = after.dropFirst()
            }
            guard isIPv6(host) else { return .failure(Problem(message: "is not an IPv6 address in brackets")) }
        } else {
            if host.filter({ $0 == ":" }).count > 1 {
                return .failure(Problem(message: "is an IPv6 address without brackets: write [address]:port"))
            }
            if let colon = host.firstIndex(of: ":") {
                portText = host[host.index(after: colon)...]
                host = host[..<colon]
            }
            guard isIPv4(host) else { return .failure(Problem(message: "must be an IPv4 address or [IPv6]:port")) }
        }
        var port = wellKnownPort
        if let portText {
            guard let parsed = Int(portText), (1...65_535).contains(parsed) else {
                return .failure(Problem(message: "has a port outside 1...65535"))
            }
            port = parsed
        }
        return .success(PortalAddress(host: String(host), port: port))
    }

    private static func isIPv4(_ text: Substring) -> Bool {
        var address = in_addr()
        return inet_pton(AF_INET, String(text), &address) == 1
    }

    private static func isIPv6(_ text: Substring) -> Bool {
        var address = in6_addr()
        return inet_pton(AF_INET6, String(text), &address) == 1
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

extension Portal {
    /// `host:port`, with IPv6 hosts in brackets: what `[[portal]] address` takes.
    public var address: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// Levenshtein distance, for "did you mean" hints on unknown keys.
private func editDistance(_ a: String, _ b: String) -> Int {
    let b = Array(b)
    var previous = Array(0...b.count)
    for (i, character) in a.enumerated() {
        var current = [i + 1]
        for j in b.indices {
            current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (character == b[j] ? 0 : 1)))
        }
        previous = current
    }
    return previous[b.count]
}
