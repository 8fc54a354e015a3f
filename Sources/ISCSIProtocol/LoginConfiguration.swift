import NIOCore

/// A target node as login needs to see it: its name, alias, access list and authentication.
public struct LoginTarget: Sendable, Hashable {
    public var name: String
    public var alias: String?
    /// Initiator names allowed to log in; empty allows every initiator.
    public var allowedInitiators: [String]
    /// The CHAP account initiators must prove; nil accepts AuthMethod=None.
    public var chap: CHAPAccount?
    /// The account the target answers mutual CHAP with; nil refuses mutual CHAP.
    public var mutualCHAP: CHAPAccount?
    /// The largest transfer, in bytes, that every logical unit of the target accepts in one command (a passthrough
    /// disk's max_hw_sectors_kb); nil when no logical unit is bounded. MaxBurstLength and FirstBurstLength are
    /// negotiated no higher, so that no burst exceeds what the device can take.
    public var maximumTransferLength: Int?

    public init(
        name: String, alias: String? = nil, allowedInitiators: [String] = [], chap: CHAPAccount? = nil,
        mutualCHAP: CHAPAccount? = nil, maximumTransferLength: Int? = nil
    ) {
        self.name = name
        self.alias = alias
        self.allowedInitiators = allowedInitiators
        self.chap = chap
        self.mutualCHAP = mutualCHAP
        self.maximumTransferLength = maximumTransferLength
    }

    /// Whether `initiatorName` may log in. iSCSI names compare after stringprep normalization, which folds case
    /// (RFC 7143 §4.2.7.1, RFC 3722), so the access list matches regardless of case.
    public func admits(initiatorName: String) -> Bool {
        allowedInitiators.isEmpty || allowedInitiators.contains { $0.lowercased() == initiatorName.lowercased() }
    }
}

/// Looks up the targets reachable through the portal a connection arrived on.
public protocol LoginPolicy: Sendable {
    /// The target named `name`, or nil when no such target is served here.
    func target(named name: String) -> LoginTarget?
}

/// The per-portal settings a login needs.
public struct LoginConfiguration: Sendable, Hashable {
    public var limits: TargetNegotiationLimits
    /// The portal group tag of the portal the connection came in on (TargetPortalGroupTag, RFC 7143 §13.9).
    public var portalGroupTag: UInt16
    /// CHAP that discovery sessions must present; nil allows discovery without authentication.
    public var discoveryCHAP: CHAPAccount?
    /// The account the target answers mutual CHAP with in discovery sessions.
    public var discoveryMutualCHAP: CHAPAccount?
    /// Commands the initiator may queue beyond ExpCmdSN during login (MaxCmdSN = ExpCmdSN + window - 1).
    public var commandWindow: UInt32

    public init(
        limits: TargetNegotiationLimits = TargetNegotiationLimits(), portalGroupTag: UInt16 = 1,
        discoveryCHAP: CHAPAccount? = nil, discoveryMutualCHAP: CHAPAccount? = nil, commandWindow: UInt32 = 128
    ) {
        self.limits = limits
        self.portalGroupTag = portalGroupTag
        self.discoveryCHAP = discoveryCHAP
        self.discoveryMutualCHAP = discoveryMutualCHAP
        self.commandWindow = commandWindow
    }
}
