import NIOCore
import Testing

@testable import FerryTarget
@testable import ISCSIProtocol

/// Task-set functions reach the other sessions of the target through the registry
/// (``SessionRegistry/otherSessions(of:)``, ``SessionRegistry/session(serial:)``): the function is answered once
/// every other session has terminated its tasks, and the other I_T nexus is told what happened by a unit attention.
@Suite struct TaskSetAcrossSessionsTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var function: TaskManagementFunctionRequest.Function
        /// Sense key, ASC and ASCQ of the next command of the other session.
        var otherSession: [UInt8]
        /// Of the session that sent the function; nil: GOOD.
        var origin: [UInt8]?
        var testDescription: String { "\(function)" }
    }

    static let cases = [
        // SAM-5 §6.6: LOGICAL UNIT RESET establishes BUS DEVICE RESET FUNCTION OCCURRED for every I_T nexus.
        Case(function: .logicalUnitReset, otherSession: [0x06, 0x29, 0x03], origin: [0x06, 0x29, 0x03]),
        // SPC-4 §7.5.8 (TAS = 0): COMMANDS CLEARED BY ANOTHER INITIATOR for each I_T nexus whose task was aborted.
        Case(function: .clearTaskSet, otherSession: [0x06, 0x2f, 0x00], origin: nil),
    ]

    @Test(arguments: cases)
    func aFunctionWaitsForTheOtherSessionAndLeavesItAUnitAttention(_ test: Case) throws {
        let target = try EmbeddedTarget()
        let origin = try target.connect(isid: 0x8000_0000_0001)
        let other = try target.connect(isid: 0x8000_0000_0002)
        #expect(try origin.logIn()?.statusClass == 0)
        #expect(try other.logIn()?.statusClass == 0)
        #expect(target.context.registry.count == 2)
        // Both I_T nexuses are known to the logical unit.
        #expect(try origin.run(origin.command(testUnitReady))?.status == good)
        #expect(try other.run(other.command(testUnitReady))?.status == good)

        // A task of the other session is at the backend; its completion is held back.
        let held = other.command(testUnitReady)
        try other.send(.scsiCommand(held))
        #expect(try other.receive(deliveringCompletions: false).isEmpty)
        #expect(target.relay.pending == 1)

        let request = origin.function(test.function)
        try origin.send(.taskManagementFunctionRequest(request))
        // The other session has marked its task, but it has not left the backend: no answer yet.
        #expect(try origin.receive(deliveringCompletions: false).isEmpty)

        // The backend returns the task; the other session reports it terminated, and the function is answered.
        #expect(target.relay.deliver())
        let otherAnswers = try other.receive()
        // TAS is 0: the aborted task ends without a response.
        #expect(otherAnswers.compactMap { SCSIStatusPDU($0, itt: held.initiatorTaskTag) }.isEmpty)
        let answers = try origin.receive()
        #expect(answers.count == 1)
        guard case .taskManagementFunctionResponse(let response)? = answers.first else {
            Issue.record("no Task Management Function Response: \(answers)")
            return
        }
        #expect(response.initiatorTaskTag == request.initiatorTaskTag)
        #expect(response.response == .functionComplete)

        let afterwards = try #require(try other.run(other.command(testUnitReady)))
        #expect(afterwards.status == checkCondition)
        #expect(afterwards.senseCode == test.otherSession)
        // Reported once.
        #expect(try other.run(other.command(testUnitReady))?.status == good)

        let own = try #require(try origin.run(origin.command(testUnitReady)))
        #expect(own.status == (test.origin == nil ? good : checkCondition))
        #expect(own.senseCode == test.origin)
    }
}
