/// Task Management Function Request, RFC 7143 §11.5.
public struct TaskManagementFunctionRequest: Sendable, Hashable {
    /// The function codes of RFC 7143 §11.5.1 and RFC 7144 §4.
    public enum Function: UInt8, Sendable, Hashable {
        case abortTask = 1
        case abortTaskSet = 2
        case clearACA = 3
        case clearTaskSet = 4
        case logicalUnitReset = 5
        case targetWarmReset = 6
        case targetColdReset = 7
        case taskReassign = 8
        case queryTask = 9
        case queryTaskSet = 10
        case itNexusReset = 11
        case queryAsynchronousEvent = 12
    }

    public var immediate: Bool
    /// The raw function code; decode with ``Function``. Unknown codes are kept so that the
    /// target can answer "function not supported" rather than rejecting the PDU.
    public var functionCode: UInt8
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var referencedTaskTag: UInt32
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    public var refCmdSN: UInt32
    public var expDataSN: UInt32

    public var function: Function? { Function(rawValue: functionCode) }

    public init(
        immediate: Bool, function: Function, lun: UInt64, initiatorTaskTag: UInt32,
        referencedTaskTag: UInt32 = reservedTag, cmdSN: UInt32, expStatSN: UInt32, refCmdSN: UInt32 = 0,
        expDataSN: UInt32 = 0
    ) {
        self.init(
            immediate: immediate, functionCode: function.rawValue, lun: lun, initiatorTaskTag: initiatorTaskTag,
            referencedTaskTag: referencedTaskTag, cmdSN: cmdSN, expStatSN: expStatSN, refCmdSN: refCmdSN,
            expDataSN: expDataSN)
    }

    public init(
        immediate: Bool, functionCode: UInt8, lun: UInt64, initiatorTaskTag: UInt32, referencedTaskTag: UInt32,
        cmdSN: UInt32, expStatSN: UInt32, refCmdSN: UInt32, expDataSN: UInt32
    ) {
        self.immediate = immediate
        self.functionCode = functionCode
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.referencedTaskTag = referencedTaskTag
        self.cmdSN = cmdSN
        self.expStatSN = expStatSN
        self.refCmdSN = refCmdSN
        self.expDataSN = expDataSN
    }
}

/// Task Management Function Response, RFC 7143 §11.6.
public struct TaskManagementFunctionResponse: Sendable, Hashable {
    /// The Response field of RFC 7143 §11.6.1 and RFC 7144 §4.
    public enum Response: UInt8, Sendable, Hashable {
        case functionComplete = 0
        case taskDoesNotExist = 1
        case lunDoesNotExist = 2
        case taskStillAllegiant = 3
        case taskAllegianceReassignmentNotSupported = 4
        case functionNotSupported = 5
        case functionAuthorizationFailed = 6
        case functionSucceeded = 7
        case functionRejected = 255
    }

    public var response: Response
    public var initiatorTaskTag: UInt32
    public var sequence: StatusSequence
    /// RFC 7144: QUERY ASYNCHRONOUS EVENT returns the additional response information (sense
    /// key, ASC, ASCQ: 3 bytes), carried in bytes 36-38 of the header.
    public var additionalResponseInformation: UInt32

    public init(
        response: Response, initiatorTaskTag: UInt32, sequence: StatusSequence,
        additionalResponseInformation: UInt32 = 0
    ) {
        self.response = response
        self.initiatorTaskTag = initiatorTaskTag
        self.sequence = sequence
        self.additionalResponseInformation = additionalResponseInformation
    }
}
