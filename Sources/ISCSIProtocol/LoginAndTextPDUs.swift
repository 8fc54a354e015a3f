public import NIOCore

/// Login stages, used in CSG and NSG (RFC 7143 §11.12.3).
public enum LoginStage: UInt8, Sendable, Hashable, Comparable {
    case securityNegotiation = 0
    case loginOperationalNegotiation = 1
    case fullFeaturePhase = 3

    public static func < (lhs: LoginStage, rhs: LoginStage) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The Initiator Session ID, RFC 7143 §11.12.5 (6 bytes: T, A, B, C, D fields).
public struct ISID: Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt64  // low 48 bits

    public init(rawValue: UInt64) { self.rawValue = rawValue & 0xffff_ffff_ffff }

    public var description: String {
        let hex = String(rawValue, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 12 - hex.count)) + hex
    }
}

/// Login Request, RFC 7143 §11.12.
public struct LoginRequest: Sendable, Hashable {
    /// T: the initiator is ready to transit to NSG.
    public var transit: Bool
    /// C: the text is continued in the next PDU.
    public var `continue`: Bool
    public var currentStage: LoginStage
    public var nextStage: LoginStage
    public var versionMax: UInt8
    public var versionMin: UInt8
    public var isid: ISID
    public var tsih: UInt16
    public var initiatorTaskTag: UInt32
    public var cid: UInt16
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    /// Text key=value pairs, NUL separated.
    public var data: ByteBuffer

    public init(
        transit: Bool, continue: Bool = false, currentStage: LoginStage, nextStage: LoginStage,
        versionMax: UInt8 = 0, versionMin: UInt8 = 0, isid: ISID, tsih: UInt16, initiatorTaskTag: UInt32,
        cid: UInt16, cmdSN: UInt32, expStatSN: UInt32, data: ByteBuffer
    ) {
        self.transit = transit
        self.continue = `continue`
        self.currentStage = currentStage
        self.nextStage = nextStage
        self.versionMax = versionMax
        self.versionMin = versionMin
        self.isid = isid
        self.tsih = tsih
        self.initiatorTaskTag = initiatorTaskTag
        self.cid = cid
        self.cmdSN = cmdSN
        self.expStatSN = expStatSN
        self.data = data
    }
}

/// Login Response, RFC 7143 §11.13.
public struct LoginResponse: Sendable, Hashable {
    public var transit: Bool
    public var `continue`: Bool
    public var currentStage: LoginStage
    public var nextStage: LoginStage
    public var versionMax: UInt8
    public var versionActive: UInt8
    public var isid: ISID
    public var tsih: UInt16
    public var initiatorTaskTag: UInt32
    public var sequence: StatusSequence
    public var statusClass: UInt8
    public var statusDetail: UInt8
    public var data: ByteBuffer

    public init(
        transit: Bool, continue: Bool = false, currentStage: LoginStage, nextStage: LoginStage,
        versionMax: UInt8 = 0, versionActive: UInt8 = 0, isid: ISID, tsih: UInt16, initiatorTaskTag: UInt32,
        sequence: StatusSequence, statusClass: UInt8, statusDetail: UInt8, data: ByteBuffer
    ) {
        self.transit = transit
        self.continue = `continue`
        self.currentStage = currentStage
        self.nextStage = nextStage
        self.versionMax = versionMax
        self.versionActive = versionActive
        self.isid = isid
        self.tsih = tsih
        self.initiatorTaskTag = initiatorTaskTag
        self.sequence = sequence
        self.statusClass = statusClass
        self.statusDetail = statusDetail
        self.data = data
    }
}

/// Text Request, RFC 7143 §11.10.
public struct TextRequest: Sendable, Hashable {
    public var immediate: Bool
    public var final: Bool
    public var `continue`: Bool
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    public var data: ByteBuffer

    public init(
        immediate: Bool = false, final: Bool = true, continue: Bool = false, lun: UInt64 = 0,
        initiatorTaskTag: UInt32, targetTransferTag: UInt32 = reservedTag, cmdSN: UInt32, expStatSN: UInt32,
        data: ByteBuffer
    ) {
        self.immediate = immediate
        self.final = final
        self.continue = `continue`
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.cmdSN = cmdSN
        self.expStatSN = expStatSN
        self.data = data
    }
}

/// Text Response, RFC 7143 §11.11.
public struct TextResponse: Sendable, Hashable {
    public var final: Bool
    public var `continue`: Bool
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var sequence: StatusSequence
    public var data: ByteBuffer

    public init(
        final: Bool, continue: Bool = false, lun: UInt64 = 0, initiatorTaskTag: UInt32,
        targetTransferTag: UInt32 = reservedTag, sequence: StatusSequence, data: ByteBuffer
    ) {
        self.final = final
        self.continue = `continue`
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.sequence = sequence
        self.data = data
    }
}
