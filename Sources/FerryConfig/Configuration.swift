/// Ferry's whole configuration, as read from TOML or built from the embedded default.
public struct FerryConfiguration: Sendable, Hashable {
    public var portals: [Portal]
    public var targets: [Target]
    /// Where the embedded default keeps its backing file, and where runtime state lives.
    public var stateDirectory: String
    /// CHAP credentials that discovery sessions must present; nil allows discovery without CHAP.
    public var discoveryAuthentication: CHAPCredentials?
    public var limits: Limits
    /// The Unix socket ferryctl talks to (`[control] socket`); nil: `$RUNTIME_DIRECTORY/control.sock`
    /// under systemd, else /run/ferry/control.sock.
    public var controlSocket: String? = nil
    /// Where the Prometheus text endpoint listens (`[metrics] address`); nil, the default, turns it off.
    public var metricsAddress: ListenAddress? = nil
    /// `[alua]`: this ferryd is one of several gateways that export the same RBD images (docs/ceph.md). Nil, the
    /// default: no ALUA.
    public var gateways: Gateways? = nil

    public init(
        portals: [Portal], targets: [Target], stateDirectory: String,
        discoveryAuthentication: CHAPCredentials? = nil, limits: Limits = Limits()
    ) {
        self.portals = portals
        self.targets = targets
        self.stateDirectory = stateDirectory
        self.discoveryAuthentication = discoveryAuthentication
        self.limits = limits
    }
}

/// The gateways that export the same RBD images (`[alua]`): each is a target port group whose identifier is its
/// portal group tag, and their RBD LUNs report implicit ALUA.
public struct Gateways: Sendable, Hashable {
    /// The default ``takeoverAfter``: a standby takes an image over after 10 s without its owner's heartbeat.
    public static let defaultTakeoverAfter = 10_000

    /// `port_groups`: every gateway's portal group tag, this one's included.
    public var portGroups: [UInt16]
    /// `takeover_after`: milliseconds without the owner's heartbeat after which a standby gateway fences the owner
    /// and takes the image over.
    public var takeoverAfter: Int

    public init(portGroups: [UInt16], takeoverAfter: Int = Gateways.defaultTakeoverAfter) {
        self.portGroups = portGroups
        self.takeoverAfter = takeoverAfter
    }
}

/// A listening address (RFC 7143 network portal), with its portal group tag.
public struct Portal: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var portalGroupTag: UInt16

    public init(host: String, port: Int = 3260, portalGroupTag: UInt16 = 1) {
        self.host = host
        self.port = port
        self.portalGroupTag = portalGroupTag
    }
}

/// A TCP address to listen on (host and port), such as the metrics endpoint's.
public struct ListenAddress: Sendable, Hashable {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// An iSCSI target node.
public struct Target: Sendable, Hashable {
    public var name: String
    public var alias: String?
    public var luns: [LogicalUnit]
    /// Initiator names allowed to log in and to see this target in SendTargets; empty allows all.
    public var allowedInitiators: [String]
    /// CHAP that initiators must answer; nil means AuthMethod=None is accepted.
    public var chap: CHAPCredentials?
    /// For mutual CHAP: the credentials the target answers the initiator's challenge with.
    public var mutualCHAP: CHAPCredentials?

    public init(
        name: String, alias: String? = nil, luns: [LogicalUnit], allowedInitiators: [String] = [],
        chap: CHAPCredentials? = nil, mutualCHAP: CHAPCredentials? = nil
    ) {
        self.name = name
        self.alias = alias
        self.luns = luns
        self.allowedInitiators = allowedInitiators
        self.chap = chap
        self.mutualCHAP = mutualCHAP
    }
}

/// A logical unit and its backing store.
public struct LogicalUnit: Sendable, Hashable {
    public enum Backend: String, Sendable, Hashable {
        /// The emulated SBC disk over a regular file or a block device.
        case emulated
        /// SCSI passthrough: the initiators' commands go to a real SCSI disk through the Linux SCSI
        /// generic driver (/dev/sgN, or SG_IO on /dev/sdX). docs/passthrough.md describes it.
        case sg
        /// For benchmarking only: the emulated SBC disk over no storage at all. Reads return zeroes and
        /// every write is discarded, so that a benchmark measures the protocol path rather than a disk
        /// (as tgt's bs_null, LIO's nullio and SPDK's null bdev do). It has no ``LogicalUnit/path``
        /// and needs a ``LogicalUnit/size``.
        case null
        /// The emulated SBC disk over a Ceph RBD image (``LogicalUnit/rbd``), for gateways in front of Ceph
        /// (docs/ceph.md). Its ``LogicalUnit/path`` is the image spec, `pool/image` or `pool/namespace/image`.
        case rbd
    }

    /// `write_cache` when the configuration does not give it: on, but for an RBD image, which Ferry opens without
    /// librbd's client cache and so has no volatile cache to report.
    public static func defaultWriteCache(for backend: Backend) -> Bool { backend != .rbd }

    /// The Ceph RBD image behind a LUN of backend ``Backend/rbd``, and the client that opens it.
    public struct RBDImage: Sendable, Hashable {
        public static let defaultCephConf = "/etc/ceph/ceph.conf"
        public static let defaultClientID = "admin"

        public var pool: String
        public var image: String
        /// The RADOS namespace in the pool; the pool's default namespace when empty.
        public var namespace: String
        public var cephConf: String
        /// The client is `client.<clientID>`.
        public var clientID: String
        /// The keyring with the client's key; the one ceph.conf names when nil.
        public var keyring: String?

        public init(
            pool: String, image: String, namespace: String = "", cephConf: String = RBDImage.defaultCephConf,
            clientID: String = RBDImage.defaultClientID, keyring: String? = nil
        ) {
            self.pool = pool
            self.image = image
            self.namespace = namespace
            self.cephConf = cephConf
            self.clientID = clientID
            self.keyring = keyring
        }

        /// `pool/image` or `pool/namespace/image`, as `rbd` names an image.
        public var spec: String { namespace.isEmpty ? "\(pool)/\(image)" : "\(pool)/\(namespace)/\(image)" }
    }

    /// The default ``commandTimeout``: below the 30 s that Linux initiators wait for a command.
    public static let defaultCommandTimeout = 20_000
    /// The default ``abortDeadline``: well within the 15 s Linux initiators wait for an abort.
    public static let defaultAbortDeadline = 5_000

    public var lun: UInt64
    /// The file, device or WWN behind the LUN; empty for ``Backend/null``, which has none.
    public var path: String
    public var backend: Backend
    /// Size in bytes, used to create a missing backing file (sparse). Ignored for block devices.
    /// The capacity of a ``Backend/null`` LUN, which requires it.
    public var size: UInt64?
    public var blockSize: Int
    public var readOnly: Bool
    /// Vendor, product and serial reported by INQUIRY; derived from the store when nil.
    public var vendor: String
    public var product: String
    public var serial: String?
    /// Write cache enabled (WCE in the caching mode page) at start.
    public var writeCache: Bool
    /// Passthrough: milliseconds the kernel gives a command before it aborts it.
    public var commandTimeout: Int
    /// Passthrough: milliseconds an aborted command may stay in the device before Ferry resets
    /// the device (SG_SCSI_RESET DEVICE with NO_ESCALATE).
    public var abortDeadline: Int
    /// Passthrough: LOGICAL UNIT RESET and TARGET RESET reach the device.
    public var resetDevice: Bool
    /// Emulated: the most bytes per second that SANITIZE OVERWRITE writes, so that erasing this LUN
    /// leaves the storage's bandwidth to the others; unlimited when nil.
    public var sanitizeRate: UInt64?
    /// RBD: the image and its client; nil for every other backend.
    public var rbd: RBDImage?

    public init(
        lun: UInt64, path: String, backend: Backend = .emulated, size: UInt64? = nil, blockSize: Int = 512,
        readOnly: Bool = false, vendor: String = "FERRY", product: String = "EMULATED DISK", serial: String? = nil,
        writeCache: Bool = true, commandTimeout: Int = LogicalUnit.defaultCommandTimeout, sanitizeRate: UInt64? = nil,
        abortDeadline: Int = LogicalUnit.defaultAbortDeadline, resetDevice: Bool = true, rbd: RBDImage? = nil
    ) {
        self.lun = lun
        self.path = path
        self.backend = backend
        self.size = size
        self.blockSize = blockSize
        self.readOnly = readOnly
        self.vendor = vendor
        self.product = product
        self.serial = serial
        self.writeCache = writeCache
        self.commandTimeout = commandTimeout
        self.sanitizeRate = sanitizeRate
        self.abortDeadline = abortDeadline
        self.resetDevice = resetDevice
        self.rbd = rbd
    }
}

/// A CHAP user name and secret (RFC 7143 §12.1.3).
public struct CHAPCredentials: Sendable, Hashable, CustomStringConvertible {
    public var user: String
    public var secret: String
    /// The `secret_file` the secret was read from (absolute); nil for an inline `secret`. Saving the
    /// configuration writes this path back, never the secret it holds.
    public var secretFile: String?

    public init(user: String, secret: String, secretFile: String? = nil) {
        self.user = user
        self.secret = secret
        self.secretFile = secretFile
    }

    /// Never prints the secret.
    public var description: String { "CHAP user \(user)" }
}

/// Bounds on what initiators can make Ferry hold.
public struct Limits: Sendable, Hashable {
    /// MaxRecvDataSegmentLength that Ferry declares (bytes it accepts in one PDU).
    public var maxRecvDataSegmentLength: Int = 262_144
    /// Largest MaxBurstLength and FirstBurstLength Ferry agrees to.
    public var maxBurstLength: Int = 1_048_576
    public var firstBurstLength: Int = 262_144
    public var maxOutstandingR2T: Int = 8
    /// CmdSN window: how many commands a session may have queued beyond ExpCmdSN.
    public var commandWindow: Int = 128
    /// Normal sessions Ferry holds at once; discovery sessions are counted apart.
    public var maxSessions: Int = 256
    /// Discovery (SendTargets) sessions Ferry holds at once.
    public var maxDiscoverySessions: Int = 32
    /// Sessions of each type (normal, discovery) that one initiator name may hold at once.
    public var maxSessionsPerInitiator: Int = 64
    public var maxConnectionsPerSession: Int = 8
    /// Connections still in the login phase, in all and from one IP address; a connection beyond
    /// either is closed as soon as it is accepted.
    public var maxLoginsInProgress: Int = 256
    public var maxLoginsInProgressPerAddress: Int = 32
    /// Seconds a login may take before the connection is closed.
    public var loginTimeout: Int = 15
    /// Seconds of silence before the target pings with NOP-In, and how long it waits for the answer.
    public var nopInInterval: Int = 30
    public var nopInTimeout: Int = 30
    /// MiB that all sessions together may hold in Data-Out and Data-In buffers; a command beyond it
    /// ends with TASK SET FULL.
    public var maxDataBufferMiB: Int = 1_024
    /// Seconds a metrics endpoint connection has to send its whole request before it is closed.
    public var metricsRequestTimeout: Int = 10
    /// Connections the metrics endpoint holds at once; more are closed as they are accepted.
    public var maxMetricsConnections: Int = 16

    public init() {}
}
