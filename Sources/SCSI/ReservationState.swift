public import NIOCore
import Synchronization

/// SPC-2 reservations and SPC-4 persistent reservations of one logical unit.
public final class ReservationState: Sendable {
    let unitAttentions: UnitAttentionConditions

    public init(unitAttentions: UnitAttentionConditions) {
        self.unitAttentions = unitAttentions
    }

    /// nil when `cdb` from `nexus` may run; otherwise the RESERVATION CONFLICT result.
    public func check(_ cdb: ByteBuffer, from nexus: ITNexus) -> SCSIResult? { nil }
    public func reserve(_ request: SCSIRequest) -> SCSIResult { .good }
    public func release(_ request: SCSIRequest) -> SCSIResult { .good }
    public func persistentReserveIn(_ request: SCSIRequest) -> SCSIResult { .checkCondition(.invalidCommandOperationCode) }
    public func persistentReserveOut(_ request: SCSIRequest) -> SCSIResult { .checkCondition(.invalidCommandOperationCode) }
    public func apply(_ event: LogicalUnitEvent) {}
}
