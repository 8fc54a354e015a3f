import Synchronization

/// The memory a target lets its sessions hold in Data-Out and Data-In buffers, shared by all of
/// them (`[limits] max_data_buffer_mib`). A command takes its Expected Data Transfer Length when it
/// arrives and gives it back when its response is sent or it is aborted; a command that finds no
/// room ends with TASK SET FULL, so that one initiator's large transfers cannot exhaust the box.
final class DataBufferBudget: Sendable {
    let capacity: Int
    private let available: Atomic<Int>

    init(capacity: Int) {
        self.capacity = capacity
        self.available = Atomic(capacity)
    }

    /// Takes `bytes` if they are free.
    func reserve(_ bytes: Int) -> Bool {
        guard bytes > 0 else { return true }
        var current = available.load(ordering: .relaxed)
        while current >= bytes {
            let (exchanged, original) = available.compareExchange(
                expected: current, desired: current - bytes, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    func release(_ bytes: Int) {
        available.add(bytes, ordering: .acquiringAndReleasing)
    }

    /// Bytes held by commands now.
    var inUse: Int { capacity - available.load(ordering: .relaxed) }
}
