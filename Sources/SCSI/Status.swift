/// SAM-5 §5.3.1 status codes.
public enum SCSIStatus: UInt8, Sendable, Hashable {
    case good = 0x00
    case checkCondition = 0x02
    case conditionMet = 0x04
    case busy = 0x08
    case reservationConflict = 0x18
    case taskSetFull = 0x28
    case acaActive = 0x30
    case taskAborted = 0x40
}

/// SPC-4 §4.5.6 sense keys.
public enum SenseKey: UInt8, Sendable, Hashable {
    case noSense = 0x0
    case recoveredError = 0x1
    case notReady = 0x2
    case mediumError = 0x3
    case hardwareError = 0x4
    case illegalRequest = 0x5
    case unitAttention = 0x6
    case dataProtect = 0x7
    case blankCheck = 0x8
    case vendorSpecific = 0x9
    case copyAborted = 0xa
    case abortedCommand = 0xb
    case volumeOverflow = 0xd
    case miscompare = 0xe
    case completed = 0xf
}

/// An additional sense code and its qualifier (SPC-4 §4.5.6, table 28).
public struct AdditionalSenseCode: Sendable, Hashable, CustomStringConvertible {
    public var asc: UInt8
    public var ascq: UInt8

    public init(_ asc: UInt8, _ ascq: UInt8) {
        self.asc = asc
        self.ascq = ascq
    }

    public var description: String {
        "\(String(asc, radix: 16, uppercase: true))/\(String(ascq, radix: 16, uppercase: true))"
    }

    public static let noAdditionalSenseInformation = Self(0x00, 0x00)
    public static let logicalUnitNotReadyCauseNotReportable = Self(0x04, 0x00)
    public static let logicalUnitNotReadyManualInterventionRequired = Self(0x04, 0x03)
    public static let logicalUnitNotReadySanitizeInProgress = Self(0x04, 0x1b)
    public static let logicalUnitNotAccessibleAsymmetricAccessStateTransition = Self(0x04, 0x0a)
    public static let logicalUnitNotAccessibleTargetPortInStandbyState = Self(0x04, 0x0b)
    public static let logicalUnitNotAccessibleTargetPortInUnavailableState = Self(0x04, 0x0c)
    public static let logicalUnitCommunicationFailure = Self(0x08, 0x00)
    public static let writeError = Self(0x0c, 0x00)
    /// 0E/03: the Data-Out buffer holds fewer bytes than the CDB transfers.
    public static let invalidFieldInCommandInformationUnit = Self(0x0e, 0x03)
    public static let unrecoveredReadError = Self(0x11, 0x00)
    public static let miscompareDuringVerifyOperation = Self(0x1d, 0x00)
    public static let parameterListLengthError = Self(0x1a, 0x00)
    public static let invalidCommandOperationCode = Self(0x20, 0x00)
    public static let accessDeniedInvalidLUIdentifier = Self(0x20, 0x09)
    public static let logicalBlockAddressOutOfRange = Self(0x21, 0x00)
    public static let invalidFieldInCDB = Self(0x24, 0x00)
    public static let logicalUnitNotSupported = Self(0x25, 0x00)
    public static let invalidFieldInParameterList = Self(0x26, 0x00)
    public static let parameterNotSupported = Self(0x26, 0x01)
    public static let parameterValueInvalid = Self(0x26, 0x02)
    public static let invalidReleaseOfPersistentReservation = Self(0x26, 0x04)
    public static let tooManySegmentDescriptors = Self(0x26, 0x08)
    public static let unreachableCopyTarget = Self(0x08, 0x04)
    public static let writeProtected = Self(0x27, 0x00)
    public static let spaceAllocationFailedWriteProtect = Self(0x27, 0x07)
    public static let notReadyToReadyChange = Self(0x28, 0x00)
    public static let powerOnResetOrBusDeviceResetOccurred = Self(0x29, 0x00)
    public static let powerOnOccurred = Self(0x29, 0x01)
    public static let scsiBusResetOccurred = Self(0x29, 0x02)
    public static let busDeviceResetFunctionOccurred = Self(0x29, 0x03)
    public static let deviceInternalReset = Self(0x29, 0x04)
    public static let itNexusLossOccurred = Self(0x29, 0x07)
    public static let parametersChanged = Self(0x2a, 0x00)
    public static let modeParametersChanged = Self(0x2a, 0x01)
    public static let reservationsPreempted = Self(0x2a, 0x03)
    public static let reservationsReleased = Self(0x2a, 0x04)
    public static let registrationsPreempted = Self(0x2a, 0x05)
    public static let asymmetricAccessStateChanged = Self(0x2a, 0x06)
    public static let capacityDataHasChanged = Self(0x2a, 0x09)
    public static let commandsClearedByAnotherInitiator = Self(0x2f, 0x00)
    public static let commandsClearedByPowerLossNotification = Self(0x2f, 0x01)
    public static let commandsClearedByDeviceServer = Self(0x2f, 0x02)
    public static let savingParametersNotSupported = Self(0x39, 0x00)
    public static let mediumNotPresent = Self(0x3a, 0x00)
    public static let reportedLUNsDataHasChanged = Self(0x3f, 0x0e)
    public static let internalTargetFailure = Self(0x44, 0x00)
    public static let invalidMessageError = Self(0x49, 0x00)
    public static let commandPhaseError = Self(0x4a, 0x00)
    public static let dataPhaseError = Self(0x4b, 0x00)
    public static let overlappedCommandsAttempted = Self(0x4e, 0x00)
    public static let mediumRemovalPrevented = Self(0x53, 0x02)
    public static let insufficientRegistrationResources = Self(0x55, 0x04)
    public static let iscsiInitiatorDataDigestError = Self(0x47, 0x05)
    public static let initiatorDetectedErrorMessageReceived = Self(0x48, 0x00)
    public static let unreachableCopyTargetOrSegment = Self(0x08, 0x04)
    public static let copyTargetDeviceNotReachable = Self(0x0d, 0x02)
    public static let invalidCopyTargetDeviceType = Self(0x0d, 0x03)
    public static let unexpectedInexactSegment = Self(0x0d, 0x04)
    public static let tooManyTargetDescriptors = Self(0x26, 0x06)
    public static let unsupportedTargetDescriptorTypeCode = Self(0x26, 0x07)
    public static let unsupportedSegmentDescriptorTypeCode = Self(0x26, 0x09)
    public static let insufficientResourcesToCreateROD = Self(0x55, 0x0c)
    public static let operationInProgress = Self(0x00, 0x16)
    public static let sanitizeCommandFailed = Self(0x31, 0x03)
    public static let mediumFormatCorrupted = Self(0x31, 0x00)
    public static let informationalExceptionsFailurePredictionThresholdExceeded = Self(0x5d, 0x00)
}

/// Sense data, built in fixed format (SPC-4 §4.5.3) unless descriptor format is asked for.
public struct SenseData: Sendable, Hashable, Error, CustomStringConvertible {
    /// The sense-key specific field (SPC-4 §4.5.2.4).
    public enum SenseKeySpecific: Sendable, Hashable {
        /// Field pointer: C/D set when the error is in the CDB, with the byte and optionally the bit.
        case fieldPointer(inCDB: Bool, byte: UInt16, bit: UInt8?)
        /// Progress indication (0...65535 of 65536), for NOT READY operation in progress.
        case progress(UInt16)
    }

    public var senseKey: SenseKey
    public var code: AdditionalSenseCode
    /// The INFORMATION field (VALID bit set when present).
    public var information: UInt64?
    public var commandSpecificInformation: UInt32
    public var senseKeySpecific: SenseKeySpecific?
    /// Sense data that a device returned (passthrough), sent to the initiator byte for byte by
    /// ``bytes(descriptorFormat:)``; the fields above then only describe it.
    public var verbatim: [UInt8]?

    public init(
        _ senseKey: SenseKey, _ code: AdditionalSenseCode, information: UInt64? = nil,
        commandSpecificInformation: UInt32 = 0, senseKeySpecific: SenseKeySpecific? = nil
    ) {
        self.senseKey = senseKey
        self.code = code
        self.information = information
        self.commandSpecificInformation = commandSpecificInformation
        self.senseKeySpecific = senseKeySpecific
    }

    /// Sense data from a device, kept intact: `senseKey` and `code` are read from fixed (70h, 71h)
    /// or descriptor (72h, 73h) format; nil when `bytes` holds no valid response code.
    public init?(verbatim bytes: [UInt8]) {
        guard let first = bytes.first else { return nil }
        let keyByte: UInt8
        let code: AdditionalSenseCode
        switch first & 0x7f {
        case 0x70, 0x71:
            keyByte = bytes.count > 2 ? bytes[2] : 0
            code = AdditionalSenseCode(bytes.count > 12 ? bytes[12] : 0, bytes.count > 13 ? bytes[13] : 0)
        case 0x72, 0x73:
            keyByte = bytes.count > 1 ? bytes[1] : 0
            code = AdditionalSenseCode(bytes.count > 2 ? bytes[2] : 0, bytes.count > 3 ? bytes[3] : 0)
        default:
            return nil
        }
        self.init(SenseKey(rawValue: keyByte & 0x0f) ?? .vendorSpecific, code)
        verbatim = bytes
    }

    public var description: String { "sense key \(senseKey) ASC/ASCQ \(code)" }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB, pointing at `byte` (and `bit`) of the CDB.
    public static func invalidFieldInCDB(byte: Int, bit: Int? = nil) -> SenseData {
        SenseData(
            .illegalRequest, .invalidFieldInCDB,
            senseKeySpecific: .fieldPointer(
                inCDB: true, byte: UInt16(clamping: byte), bit: bit.map { UInt8(clamping: $0) }))
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST, pointing at `byte` of the parameter data; a byte past
    /// what the 16-bit FIELD POINTER holds is clamped to 65535 rather than trapping.
    public static func invalidFieldInParameterList(byte: Int, bit: Int? = nil) -> SenseData {
        SenseData(
            .illegalRequest, .invalidFieldInParameterList,
            senseKeySpecific: .fieldPointer(
                inCDB: false, byte: UInt16(clamping: byte), bit: bit.map { UInt8(clamping: $0) }))
    }

    public static let invalidCommandOperationCode = SenseData(
        .illegalRequest, .invalidCommandOperationCode,
        senseKeySpecific: .fieldPointer(inCDB: true, byte: 0, bit: nil))
    public static let logicalBlockAddressOutOfRange = SenseData(.illegalRequest, .logicalBlockAddressOutOfRange)
    public static let logicalUnitNotSupported = SenseData(.illegalRequest, .logicalUnitNotSupported)
    public static let writeProtected = SenseData(.dataProtect, .writeProtected)
    public static let parameterListLengthError = SenseData(.illegalRequest, .parameterListLengthError)

    /// Encodes fixed-format sense data (response code 0x70, 18 bytes) or descriptor-format
    /// sense data (response code 0x72) when `descriptorFormat` is set (D_SENSE in the control mode page).
    public func bytes(descriptorFormat: Bool = false) -> [UInt8] {
        if let verbatim { return verbatim }
        var sks: [UInt8]? = nil
        switch senseKeySpecific {
        case .none:
            break
        case .fieldPointer(let inCDB, let byte, let bit):
            var b0: UInt8 = 0x80
            if inCDB { b0 |= 0x40 }
            if let bit { b0 |= 0x08 | (bit & 0x07) }
            sks = [b0, UInt8(byte >> 8), UInt8(byte & 0xff)]
        case .progress(let p):
            sks = [0x80, UInt8(p >> 8), UInt8(p & 0xff)]
        }
        if descriptorFormat {
            var out: [UInt8] = [0x72, senseKey.rawValue, code.asc, code.ascq, 0, 0, 0, 0]
            if let information {
                out += [0x00, 0x0a, 0x80, 0x00]
                for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((information >> UInt64(shift)) & 0xff)) }
            }
            if commandSpecificInformation != 0 {
                out += [0x01, 0x0a, 0x00, 0x00, 0, 0, 0, 0]
                for shift in stride(from: 24, through: 0, by: -8) {
                    out.append(UInt8((commandSpecificInformation >> UInt32(shift)) & 0xff))
                }
            }
            if let sks { out += [0x02, 0x06, 0x00, 0x00] + sks + [0x00] }
            out[7] = UInt8(out.count - 8)
            return out
        }
        var out = [UInt8](repeating: 0, count: 18)
        out[0] = 0x70
        out[2] = senseKey.rawValue
        if let information {
            out[0] |= 0x80
            let info = UInt32(truncatingIfNeeded: information)
            out[3] = UInt8(info >> 24)
            out[4] = UInt8((info >> 16) & 0xff)
            out[5] = UInt8((info >> 8) & 0xff)
            out[6] = UInt8(info & 0xff)
        }
        out[7] = 10
        out[8] = UInt8(commandSpecificInformation >> 24)
        out[9] = UInt8((commandSpecificInformation >> 16) & 0xff)
        out[10] = UInt8((commandSpecificInformation >> 8) & 0xff)
        out[11] = UInt8(commandSpecificInformation & 0xff)
        out[12] = code.asc
        out[13] = code.ascq
        if let sks {
            out[15] = sks[0]
            out[16] = sks[1]
            out[17] = sks[2]
        }
        return out
    }
}
