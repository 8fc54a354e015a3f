import FerryBackends
public import FerryConfig
import FerryPassthrough
import FerrySync
import Foundation
import ISCSIProtocol
import ISCSISession
import Logging
import NIOCore
import SCSI

/// What is served right now, in numbers (for the service manager's status line).
public struct TargetStatus: Sendable, Hashable {
    public var portals: Int
    public var targets: Int
    public var logicalUnits: Int
    public var sessions: Int
}

/// One session as an administrator sees it.
public struct SessionSnapshot: Sendable, Hashable {
    public struct Connection: Sendable, Hashable {
        public var cid: UInt16
        /// The initiator's address and port; empty when the socket is gone.
        public var address: String
    }

    public var tsih: UInt16
    public var isid: String
    public var initiatorName: String
    public var targetName: String
    public var discovery: Bool
    public var connections: [Connection]
    /// Negotiated operational parameters by their RFC 7143 key names.
    public var parameters: [String: String]
    public var expCmdSN: UInt32
    public var maxCmdSN: UInt32
    /// Tasks the session holds (received and not yet answered).
    public var tasks: Int

    init(
        tsih: UInt16, isid: String, initiatorName: String, targetName: String, discovery: Bool,
        connections: [(cid: UInt16, address: SocketAddress?)], parameters: SessionParameters, expCmdSN: UInt32,
        maxCmdSN: UInt32, tasks: Int
    ) {
        self.tsih = tsih
        self.isid = isid
        self.initiatorName = initiatorName
        self.targetName = targetName
        self.discovery = discovery
        self.connections = connections.map { connection in
            let address = connection.address.map { address in
                guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
                return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
            }
            return Connection(cid: connection.cid, address: address ?? "")
        }
        let yesNo = { (value: Bool) in value ? "Yes" : "No" }
        self.parameters = [
            "InitialR2T": yesNo(parameters.initialR2T),
            "ImmediateData": yesNo(parameters.immediateData),
            "FirstBurstLength": "\(parameters.firstBurstLength)",
            "MaxBurstLength": "\(parameters.maxBurstLength)",
            "MaxOutstandingR2T": "\(parameters.maxOutstandingR2T)",
            "MaxRecvDataSegmentLength": "\(parameters.initiatorMaxRecvDataSegmentLength)",
            "ErrorRecoveryLevel": "\(parameters.errorRecoveryLevel)",
        ]
        self.expCmdSN = expCmdSN
        self.maxCmdSN = maxCmdSN
        self.tasks = tasks
    }
}

/// What a reload changed, in sentences for the log and for ferryctl.
public struct ReloadReport: Sendable, Hashable {
    /// "added target iqn...", "removed LUN 1 of iqn...".
    public var changes: [String] = []
    /// Parts of the new configuration that a reload cannot apply (they need a restart).
    public var warnings: [String] = []
    /// Sessions asked to log out because what they used went away.
    public var sessionsLoggedOut = 0
}

/// A reload that was refused: nothing of it was applied.
public struct ReloadError: Error, CustomStringConvertible {
    public var description: String
}

extension ISCSITarget {
    /// The configuration being served (after every reload and runtime change).
    public var configuration: FerryConfiguration { context.configuration }

    public var status: TargetStatus {
        let configuration = context.configuration
        return TargetStatus(
            portals: configuration.portals.count, targets: configuration.targets.count,
            logicalUnits: configuration.targets.reduce(0) { $0 + $1.luns.count }, sessions: context.registry.count)
    }

    /// Every session, read on its own event loop.
    public func sessions() async -> [SessionSnapshot] {
        var snapshots: [SessionSnapshot] = []
        for session in context.registry.all {
            if let snapshot = try? await session.eventLoop.submit({ session.snapshot() }).get() {
                snapshots.append(snapshot)
            }
        }
        return snapshots.sorted { $0.tsih < $1.tsih }
    }

    /// The task management functions answered since ferryd started, counted by target, LUN,
    /// function and response, in that order.
    public func taskManagementCounts() -> [(target: String, lun: UInt64, function: String, response: String, count: Int)] {
        context.taskManagementCounters.snapshot
            .map { (target: $0.key.target, lun: $0.key.lun, function: $0.key.function, response: $0.key.response, count: $0.value) }
            .sorted { ($0.target, $0.lun, $0.function, $0.response) < ($1.target, $1.lun, $1.function, $1.response) }
    }

    /// The logical block size and capacity in bytes of each online passthrough LUN of `target`, from the READ
    /// CAPACITY data its disk gave when the LUN was opened (nil when the disk did not say).
    public func passthroughGeometry(target: String) -> [UInt64: (blockSize: Int, bytes: UInt64?)] {
        guard let node = context.nodes[target] else { return [:] }
        return node.logicalUnits.compactMapValues { backend in
            guard let identity = HotPlugDevice.passthrough(backend)?.identity else { return nil }
            return (identity.blockSize, identity.byteCount)
        }
    }

    /// Asks the initiator of session `tsih` to log out within `seconds`; false when there is
    /// no such session.
    public func logOut(tsih: UInt16, within seconds: UInt16 = 5) -> Bool {
        guard let session = context.registry.session(tsih: tsih) else { return false }
        session.execute { $0.requestLogout(within: seconds) }
        return true
    }

    /// Serves `configuration` from now on: new targets, LUNs and ACL entries appear; the sessions
    /// of removed targets, of targets whose LUNs were removed or changed and of initiators the
    /// ACL no longer admits are asked to log out; other sessions are not touched. Portals and
    /// the state directory need a restart and stay as they are.
    ///
    /// Throws, changing nothing, when a new logical unit cannot be opened.
    public func reload(_ configuration: FerryConfiguration) throws(ReloadError) -> ReloadReport {
        try context.reload(configuration, logoutWithin: 5)
    }
}

extension TargetContext {
    /// See ``ISCSITarget/reload(_:)``.
    func reload(_ new: FerryConfiguration, logoutWithin seconds: UInt16) throws(ReloadError) -> ReloadReport {
        try reloadLock.withLock { _ throws(ReloadError) in try reloadLocked(new, logoutWithin: seconds) }
    }

    private func reloadLocked(
        _ requested: FerryConfiguration, logoutWithin seconds: UInt16
    ) throws(ReloadError)
        -> ReloadReport
    {
        let old = configuration
        var new = requested
        var report = ReloadReport()
        if new.portals != old.portals {
            report.warnings.append("[[portal]] changes need a restart of ferryd; the portals stay as they are")
            new.portals = old.portals
        }
        if new.stateDirectory != old.stateDirectory {
            report.warnings.append("state_directory changes need a restart of ferryd")
            new.stateDirectory = old.stateDirectory
        }
        if new.controlSocket != old.controlSocket || new.metricsAddress != old.metricsAddress {
            report.warnings.append("[control] and [metrics] changes need a restart of ferryd")
            new.controlSocket = old.controlSocket
            new.metricsAddress = old.metricsAddress
        }
        if new.limits != old.limits { report.changes.append("limits apply to new sessions") }
        if new.discoveryAuthentication != old.discoveryAuthentication {
            report.changes.append("discovery CHAP changed")
        }

        let oldTargets = Dictionary(uniqueKeysWithValues: old.targets.map { ($0.name, $0) })
        let currentNodes = nodes
        // Open everything new first: a failure leaves the running configuration as it is.
        var opened: [any LogicalUnitBackend] = []
        var plans: [(target: Target, units: [UInt64: any LogicalUnitBackend], copyTargets: CopyTargetDirectory)] = []
        do {
            for target in new.targets {
                let previous = oldTargets[target.name]
                let running = currentNodes[target.name]?.logicalUnits ?? [:]
                let copyTargets = currentNodes[target.name]?.copyTargets ?? CopyTargetDirectory()
                var units: [UInt64: any LogicalUnitBackend] = [:]
                for lun in target.luns {
                    if let unchanged = previous?.luns.first(where: { $0 == lun }), let backend = running[unchanged.lun]
                    {
                        units[lun.lun] = backend
                    } else {
                        let backend = try openBackend(lun, target: target.name, copyTargets: copyTargets)
                        opened.append(backend)
                        units[lun.lun] = backend
                    }
                }
                plans.append((target, units, copyTargets))
            }
        } catch {
            for backend in opened { backend.shutdown() }
            throw ReloadError(description: "cannot open a logical unit: \(error); the running configuration stays")
        }

        // Commit, and collect what must go.
        var leaving: [TargetNode] = []
        var retired: [any LogicalUnitBackend] = []
        /// The nodes whose sessions could reach what was retired.
        var retiring: [TargetNode] = []
        var affected: [(node: TargetNode, initiatorStays: (String) -> Bool)] = []
        var inventoryChanged: [TargetNode] = []
        state.withLock { state in
            var nodes: [String: TargetNode] = [:]
            for (target, units, copyTargets) in plans {
                guard let node = state.nodes[target.name], let previous = oldTargets[target.name] else {
                    nodes[target.name] = TargetNode(
                        configuration: target, portalGroupTag: portalGroupTag, logicalUnits: units,
                        copyTargets: copyTargets)
                    report.changes.append("added target \(target.name) with \(units.count) LUN(s)")
                    continue
                }
                let running = node.logicalUnits
                let gone = running.filter { number, backend in units[number] !== backend }
                retired += gone.values
                if !gone.isEmpty { retiring.append(node) }
                for number in gone.keys.sorted() {
                    let verb = units[number] == nil ? "removed" : "replaced"
                    report.changes.append("\(verb) LUN \(number) of \(target.name)")
                }
                for number in units.keys.sorted() where running[number] == nil {
                    report.changes.append("added LUN \(number) to \(target.name)")
                }
                if Set(running.keys) != Set(units.keys) { inventoryChanged.append(node) }
                if target.allowedInitiators != previous.allowedInitiators {
                    report.changes.append("allowed initiators of \(target.name) changed")
                }
                if target.chap != previous.chap || target.mutualCHAP != previous.mutualCHAP {
                    report.changes.append("CHAP of \(target.name) changed (applies to new logins)")
                }
                node.update(configuration: target, logicalUnits: units)
                nodes[target.name] = node
                if !gone.isEmpty {
                    affected.append((node, { _ in false }))
                } else if target.allowedInitiators != previous.allowedInitiators {
                    let allowed = target.allowedInitiators
                    affected.append((node, { TargetNode.admits(initiatorName: $0, allowedInitiators: allowed) }))
                }
            }
            for (name, node) in state.nodes where nodes[name] == nil {
                leaving.append(node)
                // Its sessions are asked to log out; until they go, EXTENDED COPY reaches none of its logical units.
                node.copyTargets.replaceAll(with: [])
                retired += node.allBackends
                retiring.append(node)
                report.changes.append("removed target \(name)")
            }
            state.nodes = nodes
            state.configuration = new
        }

        let sessions = registry.all
        // > If the logical unit inventory changes for any reason […] the device server shall establish a unit
        // > attention condition for the initiator port associated with every I_T nexus, with the additional sense
        // > code set to REPORTED LUNS DATA HAS CHANGED (SPC-4 §6.33)
        for node in inventoryChanged {
            let nexuses = Set(sessions.filter { $0.node === node }.map(\.nexus))
            node.reportedLUNsDataChanged.establish(
                for: nexuses, on: node.logicalUnits.values.compactMap(\.unitAttentionConditions))
        }
        for session in sessions {
            let goes =
                leaving.contains { $0 === session.node }
                || affected.contains { $0.node === session.node && !$0.initiatorStays(session.initiatorName) }
            guard goes else { continue }
            report.sessionsLoggedOut += 1
            session.execute { $0.requestLogout(within: seconds) }
        }
        // Flush what went away once the sessions that could reach it have ended: every session of those nodes was
        // asked to log out above, and is closed when its time is up.
        if !retired.isEmpty {
            admittedConnections.whenClosed(of: retiring, retirement.retire(retired))
        }
        return report
    }

    /// How a drain ended.
    enum DrainOutcome: Equatable, Sendable {
        /// Every connection closed before the deadline (at once when there was none).
        case allClosed
        /// The deadline came first; `sessions` were still there and were closed.
        case deadlinePassed(sessions: Int)
    }

    /// Asks every initiator to log out, waits up to `time` for the sessions to end, closes those
    /// that remain and waits for the commands still at the backends. `loop` keeps the time.
    @discardableResult
    func drain(within time: Duration, on loop: any EventLoop) async -> DrainOutcome {
        let deadline = NIODeadline.now() + TimeAmount(time)
        let sessions = registry.all
        if !sessions.isEmpty {
            let seconds = UInt16(clamping: max(1, time.components.seconds - 1))
            logger.info("asking initiators to log out", metadata: ["sessions": "\(sessions.count)"])
            for session in sessions { session.execute { $0.requestLogout(within: seconds) } }
        }
        let closed = await Self.wait(until: deadline, on: loop) { admittedConnections.whenClosed($0) }
        let remaining = registry.all
        if !remaining.isEmpty {
            logger.warning("closing sessions that did not log out", metadata: ["sessions": "\(remaining.count)"])
            for session in remaining { session.execute { $0.closeAllConnections() } }
        }
        // Commands still at a backend finish before the thread pool stops.
        try? await threadPool.shutdownGracefully()
        return closed ? .allClosed : .deadlinePassed(sessions: remaining.count)
    }

    /// Waits until `register` calls back or `deadline` passes; true when the callback came first.
    static func wait(
        until deadline: NIODeadline, on loop: any EventLoop,
        for register: (@escaping @Sendable () -> Void) -> Void
    ) async -> Bool {
        let promise = loop.makePromise(of: Bool.self)
        let calledBack = Locked(false)
        register {
            calledBack.withLock { $0 = true }
            promise.succeed(true)
        }
        // Nothing to wait for (no session): no suspension. ThreadSanitizer also reports a continuation resumed before
        // its task has suspended as a race (swiftlang/swift#57803), which awaiting a completed future invites.
        if calledBack.withLock({ $0 }) { return true }
        // The first completion wins; the other is ignored.
        let timeout = loop.scheduleTask(deadline: deadline) { promise.succeed(false) }
        let result = (try? await promise.futureResult.get()) ?? false
        timeout.cancel()
        return result
    }
}
