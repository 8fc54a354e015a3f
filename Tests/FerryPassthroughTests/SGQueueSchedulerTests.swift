import FerryPassthrough
import Testing

@Suite struct SGQueueSchedulerTests {
    @Test func spreadsOverTheLeastLoadedFile() {
        var scheduler = SGQueueScheduler<Int>(fileDescriptors: 3, limit: 2)
        let placements = (0..<6).map { scheduler.submit($0) }
        #expect(
            placements == [
                .write(fileDescriptor: 0), .write(fileDescriptor: 1), .write(fileDescriptor: 2),
                .write(fileDescriptor: 0), .write(fileDescriptor: 1), .write(fileDescriptor: 2),
            ])
        #expect(scheduler.outstanding == [2, 2, 2])
    }

    @Test func aFullQueueWaitsInsteadOfFailing() {
        var scheduler = SGQueueScheduler<Int>(fileDescriptors: 2, limit: 1)
        #expect(scheduler.submit(1) == .write(fileDescriptor: 0))
        #expect(scheduler.submit(2) == .write(fileDescriptor: 1))
        #expect(scheduler.submit(3) == .wait)
        #expect(scheduler.submit(4) == .wait)
        #expect(scheduler.waitingTags == [3, 4])
        // A completion on file 1 lets the oldest waiting command in, on that file.
        let next = scheduler.completed(fileDescriptor: 1)
        #expect(next.map(\.tag) == [3])
        #expect(next.map(\.fileDescriptor) == [1])
        #expect(scheduler.waitingTags == [4])
    }

    @Test func waitingCommandsKeepTheirTurn() {
        var scheduler = SGQueueScheduler<Int>(fileDescriptors: 1, limit: 1)
        _ = scheduler.submit(1)
        #expect(scheduler.submit(2) == .wait)
        // A refused write puts the command at the head; a new one does not overtake it.
        #expect(scheduler.completed(fileDescriptor: 0).map(\.tag) == [2])
        scheduler.refused(2, fileDescriptor: 0)
        #expect(scheduler.waitingTags == [2])
        #expect(scheduler.submit(3) == .wait)
        #expect(scheduler.waitingTags == [2, 3])
    }

    @Test func aRefusedFileCountsAsFullUntilACompletion() {
        var scheduler = SGQueueScheduler<Int>(fileDescriptors: 2, limit: 16)
        #expect(scheduler.submit(1) == .write(fileDescriptor: 0))
        scheduler.refused(1, fileDescriptor: 0)
        #expect(scheduler.outstanding == [16, 0])
        // Another command still goes to file 1 once the refused one is re-dispatched there.
        #expect(scheduler.completed(fileDescriptor: 1).map(\.fileDescriptor) == [1])
        #expect(scheduler.submit(2) == .write(fileDescriptor: 1))
    }

    @Test func terminationRemovesOnlyWaitingCommands() {
        var scheduler = SGQueueScheduler<Int>(fileDescriptors: 1, limit: 1)
        _ = scheduler.submit(1)
        _ = scheduler.submit(2)
        _ = scheduler.submit(3)
        let removedWaiting = scheduler.removeWaiting(2)
        let removedWritten = scheduler.removeWaiting(1)
        #expect(removedWaiting)
        #expect(removedWritten == false)
        #expect(scheduler.removeAllWaiting() == [3])
        #expect(scheduler.completed(fileDescriptor: 0).isEmpty)
        #expect(scheduler.outstanding == [0])
    }

    @Test func sixteenPerFileByDefault() {
        var scheduler = SGQueueScheduler<Int>(fileDescriptors: 4)
        let writes = (0..<64).filter { scheduler.submit($0) != .wait }
        #expect(writes.count == 64)
        #expect(scheduler.submit(64) == .wait)
        #expect(scheduler.outstanding == [16, 16, 16, 16])
    }
}
