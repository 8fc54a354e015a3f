public import NIOCore

/// An I_T nexus (SAM-5 §4.7): one initiator port and one target port.
///
/// For iSCSI (RFC 7143 §4.4.1) the initiator port name is `<initiator name>,i,0x<ISID>` and the
/// target port name is `<target name>,t,0x<TPGT>`.
public struct ITNexus: Sendable, Hashable, CustomStringConvertible {
    public var initiatorPortName: String
    public var targetPortName: String
    /// The relative target port identifier reported in VPD page 83h (the portal group tag).
    public var relativeTargetPortIdentifier: UInt16

    public init(initiatorPortName: String, targetPortName: String, relativeTargetPortIdentifier: UInt16) {
        self.initiatorPortName = initiatorPortName
        self.targetPortName = targetPortName
        self.relativeTargetPortIdentifier = relativeTargetPortIdentifier
    }

    public var description: String { "\(initiatorPortName) -> \(targetPortName)" }
}

/// SAM-5 task attributes.
public enum SCSITaskAttribute: UInt8, Sendable, Hashable {
    case simple
    case ordered
    case headOfQueue
    case aca
}

/// One SCSI command as the device server sees it: the CDB, the nexus and, for commands that
/// transfer data to the device, all of the Data-Out buffer already gathered.
public struct SCSIRequest: Sendable {
    public var cdb: ByteBuffer
    public var lun: UInt64
    public var nexus: ITNexus
    public var attribute: SCSITaskAttribute
    /// The initiator's Expected Data Transfer Length for this command, in bytes.
    public var expectedDataTransferLength: Int
    /// The Data-Out buffer (at most `expectedDataTransferLength` bytes), empty for reads.
    public var dataOut: ByteBuffer

    public init(
        cdb: ByteBuffer, lun: UInt64, nexus: ITNexus, attribute: SCSITaskAttribute = .simple,
        expectedDataTransferLength: Int, dataOut: ByteBuffer = ByteBuffer()
    ) {
        self.cdb = cdb
        self.lun = lun
        self.nexus = nexus
        self.attribute = attribute
        self.expectedDataTransferLength = expectedDataTransferLength
        self.dataOut = dataOut
    }
}

/// What a device server returns for a command.
public struct SCSIResult: Sendable {
    public var status: SCSIStatus
    public var sense: SenseData?
    /// Data-In produced by the command. It may be longer than the initiator's Expected Data
    /// Transfer Length; the transport truncates it and reports the overflow residual.
    public var dataIn: ByteBuffer
    /// Whether the sense data is to be given in descriptor format (control mode page D_SENSE).
    public var descriptorFormatSense: Bool
    /// The Data-In length, in bytes, that the CDB asks for, when ``dataIn`` holds less because the initiator's
    /// Expected Data Transfer Length has no room for the rest: a READ reads only the blocks that cover the EDTL,
    /// not the ones the transport would discard. nil when ``dataIn`` is all the command produced. The transport
    /// computes the overflow residual from the larger of the two (RFC 7143 §11.4.5.2).
    public var requestedDataInLength: Int?

    public init(status: SCSIStatus, sense: SenseData? = nil, dataIn: ByteBuffer = ByteBuffer(), descriptorFormatSense: Bool = false) {
        self.status = status
        self.sense = sense
        self.dataIn = dataIn
        self.descriptorFormatSense = descriptorFormatSense
    }

    public static let good = SCSIResult(status: .good)

    public static func checkCondition(_ sense: SenseData, descriptorFormat: Bool = false) -> SCSIResult {
        SCSIResult(status: .checkCondition, sense: sense, descriptorFormatSense: descriptorFormat)
    }
}

/// Identifies one task handed to a backend, unique for the backend's lifetime.
public struct BackendTaskTag: Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "#\(rawValue)" }
}

/// How a task handed to a backend came back. Every submitted task completes exactly once.
public enum BackendCompletion: Sendable {
    /// The device server ran the command.
    case completed(SCSIResult)
    /// The task was terminated before the device server ran it.
    case terminated
}
