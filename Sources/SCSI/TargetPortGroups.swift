/// Asymmetric logical unit access (SPC-4 §5.15): target port groups and their states, the REPORT TARGET PORT GROUPS
/// parameter data (SPC-4 §6.36), and what a target port group in the standby state still serves.
///
/// Ferry's ALUA is implicit only (TPGS = 01b): the logical unit's owner decides the states, and SET TARGET PORT
/// GROUPS is not supported.

/// An asymmetric access state (SPC-4 §6.36, table 238).
public enum AsymmetricAccessState: UInt8, Sendable, Hashable {
    case activeOptimized = 0x0
    case activeNonOptimized = 0x1
    case standby = 0x2
    case unavailable = 0x3
    case transitioning = 0xf
}

/// One target port group: its identifier, its state for the logical unit, and the relative target port identifiers
/// of its ports.
public struct TargetPortGroup: Sendable, Hashable {
    public var identifier: UInt16
    public var state: AsymmetricAccessState
    public var relativeTargetPorts: [UInt16]

    public init(identifier: UInt16, state: AsymmetricAccessState, relativeTargetPorts: [UInt16]) {
        self.identifier = identifier
        self.state = state
        self.relativeTargetPorts = relativeTargetPorts
    }

    /// The REPORT TARGET PORT GROUPS parameter data for `groups` (SPC-4 §6.36.2), in the length-only format or, when
    /// `extendedHeader`, the extended header format with `implicitTransitionSeconds`.
    public static func reportData(
        _ groups: [TargetPortGroup], extendedHeader: Bool, implicitTransitionSeconds: UInt8
    ) -> [UInt8] {
        var data: [UInt8] = extendedHeader ? [0, 0, 0, 0, 0x10, implicitTransitionSeconds, 0, 0] : [0, 0, 0, 0]
        for group in groups {
            // At most 255 ports fit the TARGET PORT COUNT field; a gateway has one.
            let ports = group.relativeTargetPorts.prefix(255)
            data.append(group.state.rawValue)
            // The states Ferry's groups can be in: active/optimized, standby and unavailable (U_SUP, S_SUP, AO_SUP).
            data.append(0x0d)
            data.appendBigEndian(group.identifier)
            // STATUS CODE 02h: the state was altered by implicit behavior (the owner taking the logical unit).
            data += [0, 0x02, 0, UInt8(ports.count)]
            for port in ports {
                data += [0, 0]
                data.appendBigEndian(port)
            }
        }
        let returnDataLength = UInt32(data.count - (extendedHeader ? 8 : 4))
        data.replaceSubrange(0..<4, with: withUnsafeBytes(of: returnDataLength.bigEndian, Array.init))
        return data
    }
}

extension AsymmetricAccessState {
    /// Whether a command with operation code `operationCode` (and service action `serviceAction`) runs on a target
    /// port in the standby state. SPC-4 §5.15.2.4.4:
    /// > While in the standby primary target port asymmetric access state, the device server shall support the
    /// > following commands that operate on the logical unit: INQUIRY, LOG SELECT, LOG SENSE, MODE SELECT, MODE SENSE,
    /// > REPORT LUNS, RECEIVE DIAGNOSTIC RESULTS, SEND DIAGNOSTIC, REPORT TARGET PORT GROUPS, SET TARGET PORT GROUPS,
    /// > REQUEST SENSE, PERSISTENT RESERVE IN, PERSISTENT RESERVE OUT, echo buffer modes of READ BUFFER and WRITE
    /// > BUFFER […]. The device server may support other commands. For those commands that are not supported, the
    /// > device server shall terminate the command with CHECK CONDITION status, with the sense key set to NOT READY,
    /// > and the additional sense code set to LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE.
    ///
    /// Ferry also answers the MAINTENANCE IN reports (supported operation codes and task management functions).
    public static func servesInStandby(operationCode: UInt8) -> Bool {
        switch operationCode {
        case OperationCode.inquiry, OperationCode.modeSelect6, OperationCode.modeSelect10, OperationCode.modeSense6,
            OperationCode.modeSense10, OperationCode.reportLUNs, OperationCode.requestSense,
            OperationCode.persistentReserveIn, OperationCode.persistentReserveOut, OperationCode.maintenanceIn:
            true
        default:
            false
        }
    }
}

extension AsymmetricAccessState {
    /// What a command that this state does not serve is terminated with: NOT READY and this additional sense code.
    /// Nil for the active states, which serve every command.
    public var notAccessible: AdditionalSenseCode? {
        switch self {
        case .activeOptimized, .activeNonOptimized: nil
        case .standby: .logicalUnitNotAccessibleTargetPortInStandbyState
        case .unavailable: .logicalUnitNotAccessibleTargetPortInUnavailableState
        case .transitioning: .logicalUnitNotAccessibleAsymmetricAccessStateTransition
        }
    }
}
