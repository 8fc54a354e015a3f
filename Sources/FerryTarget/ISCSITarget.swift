public import FerryConfig
import FerryBackends
import FerryPassthrough
import FerryRBD
import FerrySync
import Foundation
import ISCSIProtocol
import ISCSISession
public import Logging
import NIOCore
import NIOPosix
import SCSI
public import ServiceLifecycle

/// Ferry's iSCSI target: listens on the configured portals and serves the configured targets
/// until a graceful shutdown.
public final class ISCSITarget: Service {
    let context: TargetContext
    private let logger: Logger
    private let observer: (any ISCSITargetObserver)?
    /// How long a graceful shutdown waits for initiators to log out and for commands to finish.
    private let drainTime: Duration

    /// Opens every logical unit's backing store; throws when one cannot be opened.
    public init(
        configuration: FerryConfiguration, logger: Logger, observer: (any ISCSITargetObserver)? = nil,
        drainTime: Duration = .seconds(10)
    ) throws {
        self.logger = logger
        self.observer = observer
        self.drainTime = drainTime
        self.context = try TargetContext(configuration: configuration, logger: logger)
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, System.coreCount))
        let context = self.context
        let logger = self.logger
        var channels: [any Channel] = []
        do {
            for portal in context.configuration.portals {
                let channel = try await ServerBootstrap(group: group)
                    .serverChannelOption(.backlog, value: 256)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .serverChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(AcceptPauseHandler(logger: logger))
                        }
                    }
                    .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try context.configure(channel, portal: portal)
                        }
                    }
                    .bind(host: portal.host, port: portal.port)
                    .get()
                channels.append(channel)
                logger.info(
                    "listening", metadata: ["portal": "\(portal.host):\(portal.port)", "tpgt": "\(portal.portalGroupTag)"])
            }
        } catch {
            for channel in channels { try? await channel.close() }
            try? await group.shutdownGracefully()
            context.shutdown()
            throw error
        }
        let listeners = channels
        let heartbeat = observer.flatMap { observer in
            observer.heartbeatInterval.map { Self.startHeartbeat(group: group, every: $0, observer: observer) }
        }
        observer?.targetListening(status)
        let drainTime = drainTime
        await withGracefulShutdownHandler {
            for channel in listeners { try? await channel.closeFuture.get() }
        } onGracefulShutdown: { [observer] in
            observer?.targetStopping()
            context.refuseLogins()
            for channel in listeners { channel.close(promise: nil) }
        }
        await context.drain(within: drainTime, on: group.next())
        heartbeat?.cancel()
        try? await group.shutdownGracefully()
        context.shutdown()
        logger.info("stopped")
    }

    /// Runs a task on every event loop each `interval` / 2 and tells `observer` when all of
    /// them ran it: a stuck loop stops the heartbeat, and the service manager's watchdog fires.
    private static func startHeartbeat(
        group: MultiThreadedEventLoopGroup, every interval: Duration, observer: any ISCSITargetObserver
    ) -> RepeatedTask {
        let loops = Array(group.makeIterator())
        let half = (interval / 2).components
        let nanoseconds = half.seconds * 1_000_000_000 + half.attoseconds / 1_000_000_000
        let period = TimeAmount.nanoseconds(max(nanoseconds, 1_000_000))
        return loops[0].scheduleRepeatedAsyncTask(initialDelay: .zero, delay: period) { task in
            let beats = loops.map { $0.submit {} }
            return EventLoopFuture.andAllSucceed(beats, on: loops[0]).map { observer.eventLoopsResponsive() }
        }
    }
}

/// What the daemon shell learns of the target's life, for its service manager.
public protocol ISCSITargetObserver: Sendable {
    /// How often ``eventLoopsResponsive()`` should at least be called; nil: never.
    var heartbeatInterval: Duration? { get }
    /// Every portal listens.
    func targetListening(_ status: TargetStatus)
    /// A graceful shutdown began: logins are refused from now on, and sessions are drained.
    func targetStopping()
    /// Every event loop of the target just ran a task.
    func eventLoopsResponsive()
}

/// What every connection and session shares: the target nodes, the session registry and the
/// I/O threads of the emulated backends.
final class TargetContext: Sendable {
    struct State {
        var configuration: FerryConfiguration
        var nodes: [String: TargetNode]
        /// A graceful shutdown is under way: no new sessions.
        var refusingLogins = false
    }

    let state: Locked<State>
    var configuration: FerryConfiguration { state.withLock { $0.configuration } }
    var nodes: [String: TargetNode] { state.withLock { $0.nodes } }
    let registry = SessionRegistry()
    let taskManagementCounters = TaskManagementCounters()
    /// Data-Out and Data-In buffers of every session (`[limits] max_data_buffer_mib`, read at start).
    let dataBuffers: DataBufferBudget
    /// Connections in the login phase (`[limits] max_logins_in_progress`, `max_logins_in_progress_per_address`).
    let loginsInProgress = Locked(LoginsInProgress())
    /// Reloads and runtime changes happen one at a time.
    let reloadLock = Locked(())
    /// The node discovery sessions are bound to: no LUNs.
    let discoveryNode: TargetNode
    /// The connections of every session, to learn when sessions have ended.
    let admittedConnections = AdmittedConnections()
    /// Backends that left a LUN map, until they are shut down.
    let retirement = BackendRetirement()
    /// Offline passthrough logical units whose disk came back, being opened again.
    let diskReturns = DiskReturns()
    let threadPool: NIOThreadPool
    let logger: Logger

    init(configuration: FerryConfiguration, logger: Logger) throws {
        self.logger = logger
        let threadPool = NIOThreadPool(numberOfThreads: max(2, System.coreCount * 2))
        threadPool.start()
        self.threadPool = threadPool
        let tpgt = configuration.portals.first?.portalGroupTag ?? 1
        self.portalGroupTag = tpgt
        self.dataBuffers = DataBufferBudget(capacity: configuration.limits.maxDataBufferMiB << 20)
        self.state = Locked(State(configuration: configuration, nodes: [:]))
        self.discoveryNode = TargetNode(
            configuration: Target(name: "discovery", luns: []), portalGroupTag: tpgt, logicalUnits: [:])
        if configuration.targets.contains(where: { $0.luns.contains { $0.backend == .sg } }) {
            PassthroughBackend.checkCapabilities(logger: logger)
        }
        var nodes: [String: TargetNode] = [:]
        do {
            for target in configuration.targets {
                var units: [UInt64: any LogicalUnitBackend] = [:]
                let copyTargets = CopyTargetDirectory()
                for lun in target.luns {
                    units[lun.lun] = try openBackend(lun, target: target.name, copyTargets: copyTargets)
                }
                nodes[target.name] = TargetNode(
                    configuration: target, portalGroupTag: tpgt, logicalUnits: units, copyTargets: copyTargets)
            }
        } catch {
            try? threadPool.syncShutdownGracefully()
            retirement.shutdown()
            diskReturns.shutdown()
            throw error
        }
        state.withLock { $0.nodes = nodes }
    }

    /// The portal group tag every node reports (the first portal's).
    let portalGroupTag: UInt16

    /// Opens a logical unit's backing store and device server; counted when metrics are on.
    /// `copyTargets` is the directory of the target node the logical unit is for: its EXTENDED COPY
    /// reaches the logical units of that node only.
    func openBackend(
        _ lun: LogicalUnit, target: String, copyTargets: CopyTargetDirectory
    ) throws -> any LogicalUnitBackend {
        let backend = try openUnmeteredBackend(lun, target: target, copyTargets: copyTargets)
        guard configuration.metricsAddress != nil else { return backend }
        return MeteredBackend(backend, metrics: LogicalUnitMetrics(target: target, lun: lun.lun))
    }

    private func openUnmeteredBackend(
        _ lun: LogicalUnit, target: String, copyTargets: CopyTargetDirectory
    ) throws -> any LogicalUnitBackend {
        let store: any BlockStore
        let kind: String
        var asymmetricAccess: (any AsymmetricAccess)?
        switch lun.backend {
        case .sg:
            let configuration = PassthroughBackend.Configuration(
                path: lun.path, commandTimeoutMilliseconds: UInt32(lun.commandTimeout),
                abortDeadline: .milliseconds(Int64(lun.abortDeadline)), resetsDevice: lun.resetDevice)
            return try PassthroughBackend(configuration: configuration, logger: logger)
        case .emulated:
            let file = try FileBlockStore(path: lun.path, createWithSize: lun.size, readOnly: lun.readOnly)
            (store, kind) = (file, file.kind)
        case .null:
            // The loader requires a size for a null LUN; a configuration built otherwise gets an empty one.
            let nullStore = NullBlockStore(byteCount: lun.size ?? 0, target: target, lun: lun.lun)
            (store, kind) = (nullStore, nullStore.kind)
            logger.warning(
                "null backend: reads return zeroes, every write is discarded (for benchmarking only)",
                metadata: ["target": "\(target)", "lun": "\(lun.lun)", "bytes": "\(nullStore.byteCount)"])
        case .rbd:
            // The loader gives every RBD LUN its image; a configuration built without one cannot open.
            guard let image = lun.rbd else {
                throw RBDBlockStore.OpenError(imageSpec: lun.path, step: "reading the configuration", errno: EINVAL)
            }
            let rbdStore = try RBDBlockStore(
                pool: image.pool, namespace: image.namespace, image: image.image, cephConf: image.cephConf,
                clientID: image.clientID, keyring: image.keyring)
            (store, kind) = (rbdStore, rbdStore.kind)
            if let gateways = configuration.gateways {
                let ownership = try RBDImageOwnership(
                    store: rbdStore, localGroups: configuration.portals.map(\.portalGroupTag),
                    allGroups: gateways.portGroups, takeoverAfter: .milliseconds(gateways.takeoverAfter),
                    logger: logger)
                asymmetricAccess = ownership
                logger.info(
                    "RBD image \(ownership.ownsImage ? "owned: this gateway is active/optimized" : "owned by another gateway: this one is standby")",
                    metadata: [
                        "target": "\(target)", "lun": "\(lun.lun)", "image": "\(rbdStore.imageSpec)",
                        "port-groups": "\(gateways.portGroups)",
                    ])
            }
            logger.info(
                "RBD image opened",
                metadata: [
                    "target": "\(target)", "lun": "\(lun.lun)", "image": "\(rbdStore.imageSpec)",
                    "client": "client.\(image.clientID)", "bytes": "\(rbdStore.byteCount)",
                ])
        }
        var threadPool = threadPool
        var concurrency = max(2, System.coreCount * 2)
        if lun.backend == .rbd {
            // Every call waits on the cluster's network round trip: a pool of the LUN's own keeps up to
            // rbdConcurrency tasks in flight, as tgt's rbd backing store does with its 16 threads.
            threadPool = NIOThreadPool(numberOfThreads: Self.rbdConcurrency)
            threadPool.start()
            concurrency = Self.rbdConcurrency
        }
        var configuration = EmulatedBlockDevice.Configuration(blockSize: lun.blockSize)
        configuration.readOnly = lun.readOnly
        configuration.vendor = lun.vendor
        configuration.product = lun.product
        if let serial = lun.serial { configuration.serial = serial }
        configuration.writeCacheEnabled = lun.writeCache
        configuration.sanitizeRate = lun.sanitizeRate
        // Every session is an I_T nexus: room for all of them, and as many ended ones.
        configuration.unitAttentionNexusLimit = max(
            UnitAttentionConditions.defaultNexusLimit, 2 * self.configuration.limits.maxSessions)
        let device = EmulatedBlockDevice(
            store: store, configuration: configuration, copyTargets: copyTargets, asymmetricAccess: asymmetricAccess)
        return EmulatedBackend(
            device: device, store: store, kind: kind, threadPool: threadPool, concurrency: concurrency,
            ownsThreadPool: lun.backend == .rbd)
    }

    /// The tasks an RBD LUN runs at once, each on a thread of the LUN's own pool.
    static let rbdConcurrency = 16

    /// Builds a new connection's pipeline.
    func configure(_ channel: any Channel, portal: Portal) throws {
        let writer = PDUWriter()
        // The handler frames the bytes it reads into PDUs itself (ConnectionHandler).
        let handler = ConnectionHandler(context: self, portal: portal, writer: writer)
        // A peer that does not read what it asks for stops being read: once the channel holds more than the high
        // water mark (1 MiB) of unsent bytes it is not writable, and reading waits until it drains to the low
        // water mark. Without it, immediate NOP-Outs with 256 KiB of ping data from a peer that never reads grew
        // ferryd by the whole flood (issue 10: RSS from 29 to 394 MiB for 300 MiB sent).
        try channel.pipeline.syncOperations.addHandler(BackPressureHandler())
        try channel.pipeline.syncOperations.addHandler(writer)
        try channel.pipeline.syncOperations.addHandler(handler)
    }

    /// The targets `initiatorName` may see, with every portal's address, for SendTargets. A wildcard portal is
    /// reported as `localAddress`, the IP address the asking connection arrived on.
    func sendTargetsEntries(for initiatorName: String, localAddress: String?) -> [SendTargetsEntry] {
        let addresses = configuration.portals.map { portal in
            SendTargetsEntry.targetAddress(
                host: portal.host, port: portal.port, portalGroupTag: portal.portalGroupTag, localAddress: localAddress)
        }
        return nodes.values.filter { $0.admits(initiatorName: initiatorName) }.sorted { $0.name < $1.name }.map {
            SendTargetsEntry(name: $0.name, addresses: addresses)
        }
    }

    /// From now on, logins that would create a session are refused (the target is stopping).
    func refuseLogins() {
        state.withLock { $0.refusingLogins = true }
    }

    /// Waits for the commands still at the backends, then flushes every logical unit, those retired and not yet shut
    /// down included.
    func shutdown() {
        // No disk comes back from now on; a probe in progress finishes (what it opened is in a LUN map, shut down below).
        diskReturns.shutdown()
        try? threadPool.syncShutdownGracefully()
        retirement.shutdown()
        for node in nodes.values {
            for backend in node.allBackends { backend.shutdown() }
        }
    }
}

/// Why the engine refused a login that passed negotiation (RFC 7143 §11.13.5).
struct AdmissionError: Error {
    var status: LoginStatus
    var reason: String
}

/// A login admitted into a session: the window its final Login Response announces.
struct Admission {
    var session: Session
    var expCmdSN: UInt32
    var maxCmdSN: UInt32
}

extension TargetContext: LoginPolicy {
    func target(named name: String) -> LoginTarget? {
        guard let node = nodes[name] else { return nil }
        let configuration = node.configuration
        return LoginTarget(
            name: node.name, alias: node.alias, allowedInitiators: configuration.allowedInitiators,
            chap: configuration.chap.map { CHAPAccount(user: $0.user, secret: $0.secret) },
            mutualCHAP: configuration.mutualCHAP.map { CHAPAccount(user: $0.user, secret: $0.secret) },
            maximumTransferLength: node.allBackends.compactMap(\.maximumTransferLength).min())
    }

    /// What Ferry agrees to in negotiation, from the configured limits.
    var negotiationLimits: TargetNegotiationLimits {
        let limits = configuration.limits
        var negotiation = TargetNegotiationLimits()
        negotiation.maxRecvDataSegmentLength = limits.maxRecvDataSegmentLength
        negotiation.maxBurstLength = limits.maxBurstLength
        negotiation.firstBurstLength = limits.firstBurstLength
        negotiation.maxOutstandingR2T = limits.maxOutstandingR2T
        negotiation.maxConnections = limits.maxConnectionsPerSession
        return negotiation
    }

    func loginConfiguration(portal: Portal) -> LoginConfiguration {
        LoginConfiguration(
            limits: negotiationLimits, portalGroupTag: portal.portalGroupTag,
            discoveryCHAP: configuration.discoveryAuthentication.map { CHAPAccount(user: $0.user, secret: $0.secret) },
            commandWindow: UInt32(configuration.limits.commandWindow))
    }

    /// Creates, reinstates or joins the session a login asks for (RFC 7143 §6.3.5, §11.12.5-6).
    func admit(_ summary: LoginSummary, channel: any Channel, logger: Logger) -> EventLoopFuture<Admission> {
        let loop = channel.eventLoop
        let node: TargetNode
        if summary.sessionType == .discovery {
            node = discoveryNode
        } else if let name = summary.target?.name, let found = nodes[name] {
            node = found
        } else {
            return loop.makeFailedFuture(AdmissionError(status: .notFound, reason: "no such target"))
        }
        if summary.tsih != 0 {
            // A new connection for an existing session.
            guard let session = registry.session(tsih: summary.tsih), session.isid == summary.isid,
                session.initiatorName == summary.initiatorName, session.node === node
            else {
                return loop.makeFailedFuture(
                    AdmissionError(status: .sessionDoesNotExist, reason: "TSIH \(summary.tsih) names no session of this initiator"))
            }
            let cid = summary.cid
            let connections = admittedConnections
            return session.eventLoop.submit { () throws -> Admission in
                try session.prepareConnection(cid)
                connections.admitted(channel, node: node, sessionLoop: session.eventLoop)
                let window = session.sequenceNumbers
                return Admission(session: session, expCmdSN: window.expCmdSN, maxCmdSN: window.maxCmdSN)
            }.hop(to: loop)
        }
        if state.withLock({ $0.refusingLogins }) {
            return loop.makeFailedFuture(AdmissionError(status: .serviceUnavailable, reason: "the target is stopping"))
        }
        // Reinstatement first: it frees the old session's place, so that an initiator coming back after a network
        // failure is not refused while its dead session still counts.
        // > RFC 7143 §6.3.5: session reinstatement: the old session is logged out implicitly.
        let old =
            summary.sessionType == .normal
            ? registry.session(initiatorName: summary.initiatorName, isid: summary.isid, targetName: node.name) : nil
        let limits = configuration.limits
        var parameters = SessionParameters(summary.parameters)
        parameters.commandWindow = limits.commandWindow
        let serial = registry.nextSerial()
        let (admitted, replacedOld) = registry.admit(
            summary.sessionType, initiatorName: summary.initiatorName,
            limits: SessionAdmission.Limits(
                maxSessions: limits.maxSessions, maxDiscoverySessions: limits.maxDiscoverySessions,
                maxSessionsPerInitiator: limits.maxSessionsPerInitiator),
            replacing: old
        ) { tsih in
            Session(
                eventLoop: loop, tsih: tsih, isid: summary.isid, initiatorName: summary.initiatorName, node: node,
                sessionType: summary.sessionType, parameters: parameters, expCmdSN: summary.cmdSN, serial: serial,
                context: self, logger: logger)
        }
        if let old {
            logger.notice("reinstating session", metadata: ["oldTSIH": "\(old.tsih)"])
            // The successor has the same I_T nexus: the old one is lost before the successor runs a command.
            if replacedOld { old.nexusLost() }
            old.execute { $0.closeAllConnections() }
        }
        let session: Session
        switch admitted {
        case .success(let admittedSession): session = admittedSession
        case .failure(let refusal):
            // > RFC 7143 §11.13.5: 0x0302 Out of resources.
            return loop.makeFailedFuture(AdmissionError(status: .outOfResources, reason: "\(refusal)"))
        }
        admittedConnections.admitted(channel, node: node, sessionLoop: loop)
        if summary.sessionType == .normal { LoginMetrics.succeeded(target: node.name) }
        let window = session.sequenceNumbers
        return loop.makeSucceededFuture(Admission(session: session, expCmdSN: window.expCmdSN, maxCmdSN: window.maxCmdSN))
    }
}

extension SessionParameters {
    init(_ negotiated: NegotiatedParameters) {
        self.init()
        initialR2T = negotiated.initialR2T
        immediateData = negotiated.immediateData
        firstBurstLength = negotiated.firstBurstLength
        maxBurstLength = negotiated.maxBurstLength
        maxOutstandingR2T = negotiated.maxOutstandingR2T
        initiatorMaxRecvDataSegmentLength = negotiated.initiatorMaxRecvDataSegmentLength
        errorRecoveryLevel = negotiated.errorRecoveryLevel
    }
}
