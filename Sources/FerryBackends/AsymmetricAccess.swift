public import SCSI

/// The target port groups of a logical unit that several Ferry gateways export, each gateway a target port group of
/// its own whose identifier is its portal group tag (implicit ALUA, SPC-4 §5.15). The emulated device server asks it
/// for this gateway's state before every command and for every group's state for REPORT TARGET PORT GROUPS.
public protocol AsymmetricAccess: Sendable {
    /// This gateway's state for the logical unit. Called for every command, on event loops too: it never blocks.
    var localState: AsymmetricAccessState { get }
    /// Every gateway's target port group and its state, this one's included. May block (the device server calls it
    /// on an I/O thread).
    func targetPortGroups() -> [TargetPortGroup]
    /// The IMPLICIT TRANSITION TIME of REPORT TARGET PORT GROUPS' extended header: the seconds an initiator should
    /// allow a transition (a standby gateway taking the logical unit over).
    var implicitTransitionSeconds: UInt8 { get }
    /// Called once by the device server with its unit attention conditions: a change of any gateway's state is to
    /// establish ASYMMETRIC ACCESS STATE CHANGED (2A/06) there, for every I_T nexus.
    func reportChanges(to unitAttentions: UnitAttentionConditions)
    /// The logical unit is going away: stop following the other gateways (called before the store is released).
    func relinquish()
}
