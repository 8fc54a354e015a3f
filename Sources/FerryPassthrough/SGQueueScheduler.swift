import NIOCore

/// Spreads a logical unit's commands over its sg file descriptors and holds what they cannot take.
///
/// The sg driver accepts at most ``requestsPerFileDescriptor`` outstanding requests on one open
/// file (a further `write()` fails with `EDOM`), so the backend opens several and the scheduler
/// places each command on the least loaded one. When every file is full the command waits here,
/// in arrival order, for the next completion: a full queue is never turned into an error (tgt's
/// bs_sg does that, and fails libiscsi's Read10.Async and Write10.Async). The scheduler is pure:
/// it decides, the backend writes and reads.
public struct SGQueueScheduler<Tag: Hashable & Sendable>: Sendable {
    /// sg's per-file limit (`SG_MAX_QUEUE` in drivers/scsi/sg.c).
    public static var requestsPerFileDescriptor: Int { 16 }

    /// Where a command goes next.
    public enum Placement: Equatable, Sendable {
        /// Write it on this file descriptor (an index into the backend's files).
        case write(fileDescriptor: Int)
        /// Every file is full: it waits in Ferry for a completion.
        case wait
    }

    /// Outstanding requests per file descriptor.
    public private(set) var outstanding: [Int]
    private let limit: Int
    private var waiting = CircularBuffer<Tag>()

    /// A scheduler for `fileDescriptors` files, each taking up to `limit` requests.
    public init(fileDescriptors: Int, limit: Int = Self.requestsPerFileDescriptor) {
        precondition(fileDescriptors > 0 && limit > 0)
        self.outstanding = Array(repeating: 0, count: fileDescriptors)
        self.limit = limit
    }

    /// The commands waiting in Ferry, oldest first.
    public var waitingTags: [Tag] { Array(waiting) }

    /// A new command arrived. It goes to the least loaded file with room, unless others already
    /// wait (they keep their turn) or every file is full.
    public mutating func submit(_ tag: Tag) -> Placement {
        guard waiting.isEmpty, let index = leastLoaded() else {
            waiting.append(tag)
            return .wait
        }
        outstanding[index] += 1
        return .write(fileDescriptor: index)
    }

    /// The device refused a write the scheduler had placed (`EDOM` or `EAGAIN`: the file was
    /// fuller than counted). The command goes back to the head of the queue, and the file is
    /// treated as full until one of its requests completes.
    public mutating func refused(_ tag: Tag, fileDescriptor index: Int) {
        outstanding[index] = limit
        waiting.prepend(tag)
    }

    /// A request on file `index` completed, or its write failed for good. Returns the waiting commands that can now be
    /// written, oldest first, with the file each goes to.
    public mutating func completed(fileDescriptor index: Int) -> [(tag: Tag, fileDescriptor: Int)] {
        outstanding[index] = max(0, outstanding[index] - 1)
        var dispatched: [(tag: Tag, fileDescriptor: Int)] = []
        while !waiting.isEmpty, let next = leastLoaded() {
            outstanding[next] += 1
            dispatched.append((tag: waiting.removeFirst(), fileDescriptor: next))
        }
        return dispatched
    }

    /// Removes a command that still waits in Ferry; false when it is not waiting (it was
    /// written, or is unknown).
    public mutating func removeWaiting(_ tag: Tag) -> Bool {
        guard let index = waiting.firstIndex(of: tag) else { return false }
        waiting.remove(at: index)
        return true
    }

    /// Removes every waiting command and returns them, oldest first (shutdown).
    public mutating func removeAllWaiting() -> [Tag] {
        defer { waiting.removeAll() }
        return Array(waiting)
    }

    private func leastLoaded() -> Int? {
        var best: Int?
        for index in outstanding.indices where outstanding[index] < limit {
            if best == nil || outstanding[index] < outstanding[best!] { best = index }
        }
        return best
    }
}
