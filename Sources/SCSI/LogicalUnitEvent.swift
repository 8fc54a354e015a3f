/// Events from task management that change a logical unit's state (SAM-5 §7, SPC-4 §5.7).
///
/// The transport decides which tasks a function affects and terminates them; the logical unit
/// applies the side effects that belong to it: unit attention conditions, reservations, mode
/// parameters.
public enum LogicalUnitEvent: Sendable, Hashable {
    /// LOGICAL UNIT RESET: 29/03 BUS DEVICE RESET FUNCTION OCCURRED to every I_T nexus,
    /// SPC-2 reservations released, mode parameters reset to their saved values.
    case logicalUnitReset
    /// TARGET WARM RESET or TARGET COLD RESET reaching this logical unit: 29/02 (warm) or
    /// 29/01 POWER ON OCCURRED (cold) to every I_T nexus, and the effects of a logical unit reset.
    case targetReset(cold: Bool)
    /// I_T NEXUS RESET or loss of the nexus: 29/07 I_T NEXUS LOSS OCCURRED to that nexus and
    /// its SPC-2 reservation released.
    case itNexusLoss(ITNexus)
    /// CLEAR TASK SET or ABORT TASK SET from `nexus` aborted tasks of `otherNexuses`: with TAS
    /// clear, 2F/00 COMMANDS CLEARED BY ANOTHER INITIATOR goes to each of them.
    case tasksClearedByAnotherInitiator(by: ITNexus, otherNexuses: Set<ITNexus>)
}
