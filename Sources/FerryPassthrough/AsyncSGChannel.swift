internal import CSGUtils
import Dispatch
import SCSI
import FerrySync
import Foundation
import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The asynchronous sg v3 data path on /dev/sgN.
///
/// Commands are written (`write()` of an sg_io_hdr) on the caller's thread to one of several
/// file descriptors opened `O_RDWR | O_NONBLOCK`, chosen by ``SGQueueScheduler``; a dedicated
/// thread polls them and reads completions until EAGAIN. Each request owns a slot: a fixed CDB and
/// sense buffer allocated once, whose index is the request's pack_id, so the hot path allocates
/// only the Data-In buffer the transport sends from.
final class AsyncSGChannel: SGChannel {
    private struct Slot {
        var command: SGCommand
        /// The Data-In buffer the kernel copies into at `read()`; the slot's copy keeps its
        /// storage alive and is its only reference, so the pointer in the header stays valid.
        var dataIn: ByteBuffer?
        var dataLength: Int
        var terminated = false
    }

    private struct State {
        var scheduler: SGQueueScheduler<BackendTaskTag>
        var waiting: [BackendTaskTag: SGCommand] = [:]
        var slots: [Slot?]
        var freeSlots: [[Int32]]
        var slotOfTag: [BackendTaskTag: Int32] = [:]
        var stopping = false
        /// A `read()` failed for good (the device went away): commands are refused with this errno.
        var goneErrno: Int32?
    }

    /// A write the channel has to issue: the command's file, slot and header.
    private struct Issue {
        var fileIndex: Int
        var slot: Int32
        var header: sg_io_hdr_t
    }

    private static let slotBytes = SGCommand.maximumCDBLength + SGCommand.senseBufferLength + 4

    private let fds: [Int32]
    private let wakePipe: (read: Int32, write: Int32)
    private let state: Locked<State>
    private nonisolated(unsafe) let memory: UnsafeMutableRawPointer
    private let exited = DispatchSemaphore(value: 0)
    private let shutdownWait: Duration
    private let logger: Logger

    /// Opens `count` file descriptors on `node`; throws when the first cannot be opened.
    init(node: String, count: Int, shutdownWait: Duration, logger: Logger) throws(PassthroughError) {
        var fds: [Int32] = []
        for _ in 0..<count {
            switch SGSystemCalls.open(node, flags: O_RDWR | O_NONBLOCK) {
            case .success(let fd):
                fds.append(fd)
            case .failure(let error):
                for fd in fds { SGSystemCalls.close(fd) }
                throw .cannotOpen(node, errno: error.errno, hint: SGProbe.openHint(errno: error.errno))
            }
        }
        var version: Int32 = 0
        guard case .success(let number) = SGSystemCalls.ioctl(fds[0], UInt(SG_GET_VERSION_NUM), &version),
            number >= 30000
        else {
            for fd in fds { SGSystemCalls.close(fd) }
            throw .noDevice(node, "not an sg version 3 node (SG_GET_VERSION_NUM failed)")
        }
        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else {
            for fd in fds { SGSystemCalls.close(fd) }
            throw .cannotOpen(node, errno: errno, hint: "cannot create the poller's wake pipe")
        }
        _ = fcntl(pipeEnds[0], F_SETFL, O_NONBLOCK)
        _ = fcntl(pipeEnds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipeEnds[1], F_SETFD, FD_CLOEXEC)
        self.fds = fds
        self.wakePipe = (pipeEnds[0], pipeEnds[1])
        let perFile = SGQueueScheduler<BackendTaskTag>.requestsPerFileDescriptor
        let slotCount = count * perFile
        memory = UnsafeMutableRawPointer.allocate(byteCount: slotCount * Self.slotBytes, alignment: 16)
        state = Locked(
            State(
                scheduler: SGQueueScheduler(fileDescriptors: count),
                slots: Array(repeating: nil, count: slotCount),
                freeSlots: (0..<count).map { file in (0..<perFile).map { Int32(file * perFile + $0) }.reversed() }))
        self.shutdownWait = shutdownWait
        self.logger = logger
        let thread = Thread { [self] in pollCompletions() }
        thread.name = "ferry-sg-\((node as NSString).lastPathComponent)"
        thread.start()
    }

    deinit {
        memory.deallocate()
    }

    private func cdbBuffer(_ slot: Int32) -> UnsafeMutableRawPointer { memory + Int(slot) * Self.slotBytes }

    private func senseBuffer(_ slot: Int32) -> UnsafeMutableRawPointer {
        memory + Int(slot) * Self.slotBytes + SGCommand.maximumCDBLength
    }

    // MARK: Submission

    func start(_ command: SGCommand) {
        enum Admission {
            case refuse(SGCommand.Completion)
            case wait
            case write(Issue)
        }
        let admission = state.withLock { state -> Admission in
            if state.stopping { return .refuse(.terminated) }
            if let errno = state.goneErrno { return .refuse(.refused(errno: errno)) }
            switch state.scheduler.submit(command.tag) {
            case .wait:
                state.waiting[command.tag] = command
                return .wait
            case .write(let fileIndex):
                return .write(occupy(&state, fileIndex: fileIndex, command: command))
            }
        }
        switch admission {
        case .refuse(let completion): command.completion(completion)
        case .write(let issue): perform([issue])
        case .wait: break
        }
    }

    /// Gives `command` a slot on file `fileIndex` and builds its header. The scheduler has
    /// already counted it there, so a slot is free.
    private func occupy(_ state: inout State, fileIndex: Int, command: SGCommand) -> Issue {
        let slot = state.freeSlots[fileIndex].removeLast()
        var dataIn: ByteBuffer?
        let data: UnsafeMutableRawPointer?
        let length: Int
        switch command.direction {
        case .none:
            (data, length) = (nil, 0)
        case .toDevice(let buffer):
            // The command (in the slot) holds `buffer`, which keeps its storage alive and unchanged
            // until the completion; the kernel copies from it during write().
            (data, length) = (
                buffer.withUnsafeReadableBytes { UnsafeMutableRawPointer(mutating: $0.baseAddress) },
                buffer.readableBytes
            )
        case .fromDevice(let count):
            var buffer = ByteBufferAllocator().buffer(capacity: count)
            data = buffer.withUnsafeMutableWritableBytes { $0.baseAddress }
            dataIn = buffer
            length = count
        }
        state.slots[Int(slot)] = Slot(command: command, dataIn: dataIn, dataLength: length)
        state.slotOfTag[command.tag] = slot
        let header = command.header(
            cdbBuffer: cdbBuffer(slot), senseBuffer: senseBuffer(slot), data: data, dataLength: length, packID: slot)
        return Issue(fileIndex: fileIndex, slot: slot, header: header)
    }

    /// Writes each request; a refused write either goes back to the queue (sg's queue was full) or
    /// completes the command with the errno, which frees its place for a waiting one.
    private func perform(_ issues: [Issue]) {
        var work = issues
        while !work.isEmpty {
            var issue = work.removeFirst()
            guard case .failure(let error) = SGSystemCalls.write(fds[issue.fileIndex], &issue.header) else { continue }
            let (finished, next) = state.withLock { state -> ((SGCommand, SGCommand.Completion)?, [Issue]) in
                let slot = release(&state, issue.slot, fileIndex: issue.fileIndex)
                if slot.terminated { return ((slot.command, .terminated), dispatch(&state, after: issue.fileIndex)) }
                if error.isQueueFull && !state.stopping {
                    state.scheduler.refused(slot.command.tag, fileDescriptor: issue.fileIndex)
                    state.waiting[slot.command.tag] = slot.command
                    return (nil, [])
                }
                return ((slot.command, .refused(errno: error.errno)), dispatch(&state, after: issue.fileIndex))
            }
            if let (command, completion) = finished {
                if case .refused(let errno) = completion {
                    logger.notice(
                        "sg refused a command",
                        metadata: ["tag": "\(command.tag)", "error": "\(SGSystemCallError(errno: errno))"])
                }
                command.completion(completion)
            }
            work += next
        }
    }

    /// Frees `slot`, and returns what it held.
    private func release(_ state: inout State, _ slot: Int32, fileIndex: Int) -> Slot {
        let held = state.slots[Int(slot)]!
        state.slots[Int(slot)] = nil
        state.slotOfTag[held.command.tag] = nil
        state.freeSlots[fileIndex].append(slot)
        return held
    }

    /// A request on `fileIndex` left the device: the waiting commands that now fit, with slots.
    private func dispatch(_ state: inout State, after fileIndex: Int) -> [Issue] {
        state.scheduler.completed(fileDescriptor: fileIndex).map { next in
            let command = state.waiting.removeValue(forKey: next.tag)!
            return occupy(&state, fileIndex: next.fileDescriptor, command: command)
        }
    }

    // MARK: Termination, reset, shutdown

    func terminate(_ tag: BackendTaskTag) {
        let dropped = state.withLock { state -> SGCommand? in
            if state.scheduler.removeWaiting(tag) { return state.waiting.removeValue(forKey: tag) }
            if let slot = state.slotOfTag[tag] { state.slots[Int(slot)]!.terminated = true }
            return nil
        }
        dropped?.completion(.terminated)
    }

    func holds(_ tag: BackendTaskTag) -> Bool {
        state.withLock { $0.slotOfTag[tag] != nil }
    }

    func reset(_ scope: DeviceResetScope) -> Result<Void, SGSystemCallError> {
        var value = scope.ioctlValue
        return SGSystemCalls.ioctl(fds[0], UInt(SG_SCSI_RESET), &value).map { _ in () }
    }

    func shutdown() {
        let dropped = state.withLock { state -> [SGCommand] in
            state.stopping = true
            return state.scheduler.removeAllWaiting().compactMap { state.waiting.removeValue(forKey: $0) }
        }
        for command in dropped { command.completion(.terminated) }
        wake()
        if exited.wait(timeout: .now() + .milliseconds(Int(shutdownWait.components.seconds * 1000))) == .timedOut {
            logger.warning("the device still holds commands at shutdown; its sg file descriptors stay open")
        }
    }

    private func wake() {
        var byte: UInt8 = 1
        _ = Glibc.write(wakePipe.write, &byte, 1)
    }

    // MARK: Completions (the poller thread)

    private func pollCompletions() {
        var pollFDs = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        pollFDs.append(pollfd(fd: wakePipe.read, events: Int16(POLLIN), revents: 0))
        while true {
            let ready = poll(&pollFDs, nfds_t(pollFDs.count), -1)
            if ready < 0 {
                if errno == EINTR { continue }
                logger.error(
                    "poll on sg file descriptors failed", metadata: ["error": "\(SGSystemCallError(errno: errno))"])
                break
            }
            if pollFDs[fds.count].revents != 0 {
                var drain = [UInt8](repeating: 0, count: 64)
                while Glibc.read(wakePipe.read, &drain, drain.count) > 0 {}
            }
            for index in fds.indices where pollFDs[index].revents != 0 {
                if !drainCompletions(fileIndex: index) { pollFDs[index].fd = -1 }
            }
            let done = state.withLock { $0.stopping && $0.slotOfTag.isEmpty }
            if done { break }
        }
        for fd in fds { SGSystemCalls.close(fd) }
        SGSystemCalls.close(wakePipe.read)
        SGSystemCalls.close(wakePipe.write)
        exited.signal()
    }

    /// Reads completions from file `index` until EAGAIN. False when the file failed for good:
    /// its requests are completed with the error, and later commands are refused.
    private func drainCompletions(fileIndex index: Int) -> Bool {
        while true {
            var header = sg_io_hdr_t()
            switch SGSystemCalls.read(fds[index], &header) {
            case .success:
                complete(header, fileIndex: index)
            case .failure(let error) where error.errno == SGErrno.wouldBlock:
                return true
            case .failure(let error):
                logger.error(
                    "reading sg completions failed; the device is treated as gone",
                    metadata: ["error": "\(error)"])
                failAll(errno: error.errno, fileIndex: index)
                return false
            }
        }
    }

    private func complete(_ header: sg_io_hdr_t, fileIndex: Int) {
        let slotIndex = header.pack_id
        let outcome = SGCommand.outcome(of: header, senseBuffer: senseBuffer(slotIndex))
        let (slot, next) = state.withLock { state in
            (release(&state, slotIndex, fileIndex: fileIndex), dispatch(&state, after: fileIndex))
        }
        perform(next)
        if slot.terminated {
            slot.command.completion(.terminated)
            return
        }
        var dataIn = slot.dataIn ?? ByteBuffer()
        if slot.dataIn != nil {
            dataIn.moveWriterIndex(
                forwardBy: SGCommand.transferred(dataLength: slot.dataLength, residual: outcome.residual))
        }
        slot.command.completion(.finished(outcome, dataIn: dataIn))
    }

    private func failAll(errno: Int32, fileIndex: Int) {
        let (failed, waiting) = state.withLock { state -> ([Slot], [SGCommand]) in
            state.goneErrno = errno
            var failed: [Slot] = []
            let perFile = SGQueueScheduler<BackendTaskTag>.requestsPerFileDescriptor
            for slot in Int32(fileIndex * perFile)..<Int32((fileIndex + 1) * perFile)
            where state.slots[Int(slot)] != nil {
                failed.append(release(&state, slot, fileIndex: fileIndex))
            }
            let waiting = state.scheduler.removeAllWaiting().compactMap { state.waiting.removeValue(forKey: $0) }
            return (failed, waiting)
        }
        for slot in failed { slot.command.completion(slot.terminated ? .terminated : .refused(errno: errno)) }
        for command in waiting { command.completion(.refused(errno: errno)) }
    }
}
