import Foundation
import Testing

extension InVirtualMachine {
    /// Two kernel initiators (two I_T nexuses) on one passthrough LUN: Ferry, not the device
    /// (which sees one sg file handle), enforces PERSISTENT RESERVE and RESERVE(6) conflicts
    /// (guest/reservation.sh).
    @Suite struct PassthroughReservationTests {
        @Test func conflictBetweenTwoInitiatorsOnPassthroughLUN() async throws {
            let run = try await VirtualMachine.run(
                script: "reservation.sh", environment: ["FERRYD": try VirtualMachine.locateFerryd()],
                timeout: .seconds(240))
            VirtualMachine.expectSuccess(run, "reservation conflict on a passthrough LUN")
        }
    }
}
