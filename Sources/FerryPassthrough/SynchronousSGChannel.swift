internal import CSGUtils
import SCSI
import FerrySync
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The data path for a SCSI disk named as a block device without an sg node: synchronous SG_IO
/// on /dev/sdX, one command per thread of a small pool, never on an event loop. SG_IO on a block
/// device cannot be interrupted, and the kernel raises timeouts below 7 s to 7 s there.
final class SynchronousSGChannel: SGChannel {
    private enum Entry {
        case queued(SGCommand)
        case running(terminated: Bool)
    }

    private let fd: Int32
    private let threadPool: NIOThreadPool
    private let entries = Locked<[BackendTaskTag: Entry]>([:])

    init(node: String, threads: Int) throws(PassthroughError) {
        switch SGSystemCalls.open(node, flags: O_RDWR) {
        case .success(let fd): self.fd = fd
        case .failure(let error):
            throw .cannotOpen(node, errno: error.errno, hint: SGProbe.openHint(errno: error.errno))
        }
        threadPool = NIOThreadPool(numberOfThreads: threads)
        threadPool.start()
    }

    func start(_ command: SGCommand) {
        entries.withLock { $0[command.tag] = .queued(command) }
        threadPool.submit { [self] _ in
            let taken = entries.withLock { entries -> SGCommand? in
                guard case .queued(let command) = entries[command.tag] else { return nil }
                entries[command.tag] = .running(terminated: false)
                return command
            }
            guard let taken else { return }  // terminated while queued: already completed
            let completion = run(taken)
            let terminated = entries.withLock { entries -> Bool in
                defer { entries[command.tag] = nil }
                if case .running(true) = entries[command.tag] { return true }
                return false
            }
            taken.completion(terminated ? .terminated : completion)
        }
    }

    private func run(_ command: SGCommand) -> SGCommand.Completion {
        withUnsafeTemporaryAllocation(
            byteCount: SGCommand.maximumCDBLength + SGCommand.senseBufferLength, alignment: 16
        ) {
            scratch -> SGCommand.Completion in
            let cdb = scratch.baseAddress!
            let sense = cdb + SGCommand.maximumCDBLength
            func issue(_ data: UnsafeMutableRawPointer?, _ length: Int) -> Result<SGOutcome, SGSystemCallError> {
                var header = command.header(
                    cdbBuffer: cdb, senseBuffer: sense, data: data, dataLength: length, packID: 0)
                return SGSystemCalls.sgIO(fd, &header).map { SGCommand.outcome(of: header, senseBuffer: sense) }
            }
            switch command.direction {
            case .none:
                return Self.completion(issue(nil, 0), dataIn: ByteBuffer())
            case .toDevice(let buffer):
                let result = buffer.withUnsafeReadableBytes {
                    issue(UnsafeMutableRawPointer(mutating: $0.baseAddress), $0.count)
                }
                return Self.completion(result, dataIn: ByteBuffer())
            case .fromDevice(let count):
                var dataIn = ByteBufferAllocator().buffer(capacity: count)
                var result: Result<SGOutcome, SGSystemCallError> = .failure(SGSystemCallError(errno: EINVAL))
                dataIn.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { buffer in
                    result = issue(buffer.baseAddress, count)
                    guard case .success(let outcome) = result else { return 0 }
                    return SGCommand.transferred(dataLength: count, residual: outcome.residual)
                }
                return Self.completion(result, dataIn: dataIn)
            }
        }
    }

    private static func completion(_ result: Result<SGOutcome, SGSystemCallError>, dataIn: ByteBuffer)
        -> SGCommand.Completion
    {
        switch result {
        case .success(let outcome): .finished(outcome, dataIn: dataIn)
        case .failure(let error): .refused(errno: error.errno)
        }
    }

    func terminate(_ tag: BackendTaskTag) {
        let dropped = entries.withLock { entries -> SGCommand? in
            switch entries[tag] {
            case .queued(let command)?:
                entries[tag] = nil
                return command
            case .running?:
                entries[tag] = .running(terminated: true)
                return nil
            case nil:
                return nil
            }
        }
        dropped?.completion(.terminated)
    }

    func holds(_ tag: BackendTaskTag) -> Bool {
        entries.withLock { entries in
            if case .running? = entries[tag] { return true }
            return false
        }
    }

    func reset(_ scope: DeviceResetScope) -> Result<Void, SGSystemCallError> {
        var value = scope.ioctlValue
        return SGSystemCalls.ioctl(fd, UInt(SG_SCSI_RESET), &value).map { _ in () }
    }

    func shutdown() {
        let queued = entries.withLock { entries -> [SGCommand] in
            var queued: [SGCommand] = []
            for (tag, entry) in entries {
                if case .queued(let command) = entry {
                    queued.append(command)
                    entries[tag] = nil
                }
            }
            return queued
        }
        for command in queued { command.completion(.terminated) }
        try? threadPool.syncShutdownGracefully()
        SGSystemCalls.close(fd)
    }
}
