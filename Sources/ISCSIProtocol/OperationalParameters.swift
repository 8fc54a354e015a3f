/// The digest algorithms of HeaderDigest and DataDigest (RFC 7143 §13.1).
public enum DigestAlgorithm: String, Sendable, Hashable, CaseIterable {
    case none = "None"
    case crc32c = "CRC32C"
}

/// SessionType (RFC 7143 §13.21).
public enum SessionType: String, Sendable, Hashable {
    case discovery = "Discovery"
    case normal = "Normal"
}

/// What the target is willing to agree to, from configuration; the inputs of every negotiation.
public struct TargetNegotiationLimits: Sendable, Hashable {
    /// MaxRecvDataSegmentLength the target declares: the largest data segment it accepts.
    public var maxRecvDataSegmentLength: Int = 262_144
    /// Upper bounds for the Min-negotiated keys.
    public var maxBurstLength: Int = 1_048_576
    public var firstBurstLength: Int = 262_144
    public var maxOutstandingR2T: Int = 8
    public var maxConnections: Int = 8
    public var defaultTime2Retain: Int = 20
    /// The target's DefaultTime2Wait (the result is the larger of both sides).
    public var defaultTime2Wait: Int = 2
    /// The target's InitialR2T (result: OR) and ImmediateData (result: AND) values.
    public var initialR2T: Bool = false
    public var immediateData: Bool = true
    /// Digests the target accepts. The target answers with the first value of the initiator's list that is in this
    /// set (RFC 7143 §6.2.1: the initiator's list is in its order of preference).
    public var supportedDigests: Set<DigestAlgorithm> = [.none, .crc32c]
    /// CHAP algorithms the target accepts, chosen in the initiator's order of preference.
    public var chapAlgorithms: Set<CHAPAlgorithm> = Set(CHAPAlgorithm.allCases)
    /// The largest key=value text accepted across C-bit continuations.
    public var maxTextLength: Int = 65_536

    public init() {}
}

/// The operational parameters that govern a session and one of its connections once login completes.
///
/// The engine applies them as follows: frame outgoing PDUs with at most ``initiatorMaxRecvDataSegmentLength`` bytes
/// of data, accept incoming data segments up to ``targetMaxRecvDataSegmentLength``, turn on the digests, and drive
/// the write path (R2T, unsolicited data) with the burst, R2T and ordering parameters.
public struct NegotiatedParameters: Sendable, Hashable {
    // MARK: Connection parameters

    /// The initiator's declared MaxRecvDataSegmentLength: the largest data segment the target may send.
    // > The default is 8192 bytes.
    public var initiatorMaxRecvDataSegmentLength: Int = 8192
    /// The target's declared MaxRecvDataSegmentLength: the largest data segment the initiator may send.
    public var targetMaxRecvDataSegmentLength: Int = 8192
    public var headerDigest: DigestAlgorithm = .none
    public var dataDigest: DigestAlgorithm = .none

    // MARK: Session parameters (negotiated on the leading connection)

    public var sessionType: SessionType = .normal
    public var initiatorName: String = ""
    public var initiatorAlias: String?
    /// The target node; nil in a discovery session.
    public var targetName: String?
    public var maxConnections: Int = 1
    public var initialR2T: Bool = true
    public var immediateData: Bool = true
    public var maxBurstLength: Int = 262_144
    public var firstBurstLength: Int = 65_536
    public var defaultTime2Wait: Int = 2
    public var defaultTime2Retain: Int = 20
    public var maxOutstandingR2T: Int = 1
    public var dataPDUInOrder: Bool = true
    public var dataSequenceInOrder: Bool = true
    public var errorRecoveryLevel: Int = 0

    /// The defaults of RFC 7143 §13, which hold for every key that is not negotiated.
    public init() {}
}

/// The Status-Class and Status-Detail of a Login Response (RFC 7143 §11.13.5).
public struct LoginStatus: Sendable, Hashable, CustomStringConvertible {
    public var statusClass: UInt8
    public var statusDetail: UInt8

    public init(statusClass: UInt8, statusDetail: UInt8) {
        self.statusClass = statusClass
        self.statusDetail = statusDetail
    }

    public static let success = LoginStatus(statusClass: 0, statusDetail: 0)
    /// 0x0200: initiator error (miscellaneous), used for protocol errors in the login exchange.
    public static let initiatorError = LoginStatus(statusClass: 2, statusDetail: 0x00)
    /// 0x0201: the initiator could not be successfully authenticated or target authentication is not supported.
    public static let authenticationFailure = LoginStatus(statusClass: 2, statusDetail: 0x01)
    /// 0x0202: the initiator is not allowed access to the given target.
    public static let authorizationFailure = LoginStatus(statusClass: 2, statusDetail: 0x02)
    /// 0x0203: the requested iSCSI target name does not exist at this address.
    public static let notFound = LoginStatus(statusClass: 2, statusDetail: 0x03)
    /// 0x0204: the requested target has been removed and no forwarding address is provided.
    public static let targetRemoved = LoginStatus(statusClass: 2, statusDetail: 0x04)
    /// 0x0205: the requested iSCSI version range is not supported by the target.
    public static let unsupportedVersion = LoginStatus(statusClass: 2, statusDetail: 0x05)
    /// 0x0206: too many connections on this session.
    public static let tooManyConnections = LoginStatus(statusClass: 2, statusDetail: 0x06)
    /// 0x0207: missing parameters (e.g., iSCSI initiator name and/or target name).
    public static let missingParameter = LoginStatus(statusClass: 2, statusDetail: 0x07)
    /// 0x0208: the target does not support session spanning to this connection (address).
    public static let cannotIncludeInSession = LoginStatus(statusClass: 2, statusDetail: 0x08)
    /// 0x0209: the target does not support this type of session or not from this initiator.
    public static let sessionTypeNotSupported = LoginStatus(statusClass: 2, statusDetail: 0x09)
    /// 0x020a: an attempt to add a connection to a nonexistent session.
    public static let sessionDoesNotExist = LoginStatus(statusClass: 2, statusDetail: 0x0a)
    /// 0x020b: invalid request type during login.
    public static let invalidRequestDuringLogin = LoginStatus(statusClass: 2, statusDetail: 0x0b)
    /// 0x0300: target hardware or software error.
    public static let targetError = LoginStatus(statusClass: 3, statusDetail: 0x00)
    /// 0x0301: the iSCSI service or target is not currently operational.
    public static let serviceUnavailable = LoginStatus(statusClass: 3, statusDetail: 0x01)
    /// 0x0302: the target has insufficient session, connection, or other resources.
    public static let outOfResources = LoginStatus(statusClass: 3, statusDetail: 0x02)

    public var description: String {
        let raw = UInt16(statusClass) << 8 | UInt16(statusDetail)
        let hex = String(raw, radix: 16)
        return "0x" + String(repeating: "0", count: 4 - hex.count) + hex
    }
}

/// A login that must end with a Login Response carrying `status`; `reason` is for the operator's log.
struct LoginFailure: Error, Sendable, Hashable {
    var status: LoginStatus
    var reason: String

    init(_ status: LoginStatus, _ reason: String) {
        self.status = status
        self.reason = reason
    }
}
