import CRBD
public import FerryBackends
import FerrySync

#if canImport(Glibc)
import Glibc
#endif

/// A ``BlockStore`` over a Ceph RBD image, through librbd (`backend = "rbd"`). docs/ceph.md describes it.
///
/// Each store is one RADOS client of its own (`rados_create2` … `rbd_open`), so that a gateway that is fenced
/// (blocklisted) loses only the images of that client. Every call blocks on the cluster: the emulated device server
/// calls them from the store's own I/O threads (``EmulatedBackend``), never from an event loop.
///
/// librbd's client cache is off (`rbd_cache = false`): a write is in RADOS, on every replica, when it completes, so
/// another gateway that takes the image over after this one is gone reads every write that was acknowledged.
/// Discards always zero what they cover (`rbd_skip_partial_discard = false`), so deallocated blocks read as zeroes
/// (LBPRZ), however unaligned the UNMAP.
public final class RBDBlockStore: BlockStore {
    /// A failure to reach the cluster or open the image: the step that failed, with librados' or librbd's errno.
    public struct OpenError: Error, Sendable, Hashable, CustomStringConvertible {
        public var imageSpec: String
        public var step: String
        public var errno: Int32

        public init(imageSpec: String, step: String, errno: Int32) {
            self.imageSpec = imageSpec
            self.step = step
            self.errno = errno
        }

        public var description: String {
            "cannot open RBD image \(imageSpec): \(step) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        }
    }

    /// One RADOS client with the image open: replaced as a whole when a fenced gateway comes back (``reconnect(readOnly:)``),
    /// and closed when the last call using it has returned.
    final class Connection: Sendable {
        // librados and librbd handles may be used from any number of threads at once (librbd serializes what needs
        // it); they are set once here and released in deinit.
        nonisolated(unsafe) let cluster: rados_t
        nonisolated(unsafe) let ioContext: rados_ioctx_t
        nonisolated(unsafe) let image: rbd_image_t

        /// Whether the image is open read-only (`rbd_open_read_only`): librbd refuses every write through it.
        let readOnly: Bool

        /// Connects as `client.<clientID>` and opens the image (read-only with `readOnly`); `spec` names it in errors.
        init(
            spec: String, pool: String, namespace: String, image imageName: String, cephConf: String,
            clientID: String, keyring: String?, connectTimeoutSeconds: Int, readOnly: Bool
        ) throws(OpenError) {
            self.readOnly = readOnly
            func check(_ result: Int32, _ step: String) throws(OpenError) {
                guard result >= 0 else { throw OpenError(imageSpec: spec, step: step, errno: -result) }
            }
            var cluster: rados_t?
            try check(rados_create2(&cluster, "ceph", "client.\(clientID)", 0), "rados_create2")
            guard let cluster else { throw OpenError(imageSpec: spec, step: "rados_create2", errno: ENOMEM) }
            var ioContext: rados_ioctx_t?
            var image: rbd_image_t?
            do throws(OpenError) {
                try check(rados_conf_read_file(cluster, cephConf), "reading \(cephConf)")
                if let keyring {
                    try check(rados_conf_set(cluster, "keyring", keyring), "setting keyring \(keyring)")
                }
                let timeout = String(max(1, connectTimeoutSeconds))
                for (option, value) in [
                    ("rbd_cache", "false"), ("rbd_skip_partial_discard", "false"),
                    ("client_mount_timeout", timeout), ("rados_mon_op_timeout", timeout),
                ] {
                    try check(rados_conf_set(cluster, option, value), "setting \(option)")
                }
                try check(rados_connect(cluster), "connecting to the cluster (rados_connect)")
                try check(rados_ioctx_create(cluster, pool, &ioContext), "opening pool \(pool)")
                guard let ioContext else { throw OpenError(imageSpec: spec, step: "rados_ioctx_create", errno: ENOMEM) }
                rados_ioctx_set_namespace(ioContext, namespace)
                if readOnly {
                    try check(rbd_open_read_only(ioContext, imageName, &image, nil), "rbd_open_read_only")
                } else {
                    try check(rbd_open(ioContext, imageName, &image, nil), "rbd_open")
                }
                guard let image else { throw OpenError(imageSpec: spec, step: "rbd_open", errno: ENOMEM) }
                self.cluster = cluster
                self.ioContext = ioContext
                self.image = image
            } catch {
                if let image { rbd_close(image) }
                if let ioContext { rados_ioctx_destroy(ioContext) }
                rados_shutdown(cluster)
                throw error
            }
        }

        /// Closes the image, which releases its exclusive lock and watch at once: another gateway that writes next
        /// does not wait for the cluster to time this client out (30 s), as it would if the process ended with the
        /// image open.
        deinit {
            rbd_close(image)
            rados_ioctx_destroy(ioContext)
            rados_shutdown(cluster)
        }
    }

    /// What ferryctl shows as the LUN's device.
    public let kind = "rbd"
    /// `pool/image` or `pool/namespace/image`, as `rbd` writes an image spec.
    public let imageSpec: String
    public let byteCount: UInt64
    public let supportsUnmap = true
    public let unmappedReadsZero = true
    /// The cluster's fsid, the pool's id and the image's id: the same on every gateway that exports the image, so
    /// that the serial number and NAA designator derived from it are too (an initiator's multipath groups the paths
    /// by them), and unchanged when the image is renamed.
    public let identity: String
    /// The image's id (`rbd info`'s `id`), which a rename keeps.
    public let imageID: String

    /// The client in use; nil once released. Calls take it under the lock and use it outside.
    private let current: Locked<Connection?>
    /// Opens a new client (read-only or not), for ``reconnect(readOnly:)``.
    private let connect: @Sendable (Bool) throws(OpenError) -> Connection

    /// Connects to the cluster as `client.<clientID>` with `cephConf` (and `keyring`, else the one ceph.conf names),
    /// and opens `image` in `pool` (and `namespace`, when not empty). Blocks until the monitors answer or
    /// `connectTimeoutSeconds` have passed.
    public init(
        pool: String, namespace: String, image imageName: String, cephConf: String, clientID: String,
        keyring: String?, connectTimeoutSeconds: Int = 30
    ) throws(OpenError) {
        let spec = namespace.isEmpty ? "\(pool)/\(imageName)" : "\(pool)/\(namespace)/\(imageName)"
        imageSpec = spec
        connect = { (readOnly: Bool) throws(OpenError) -> Connection in
            try Connection(
                spec: spec, pool: pool, namespace: namespace, image: imageName, cephConf: cephConf,
                clientID: clientID, keyring: keyring, connectTimeoutSeconds: connectTimeoutSeconds, readOnly: readOnly)
        }
        let connection = try connect(false)
        func check(_ result: Int32, _ step: String) throws(OpenError) {
            guard result >= 0 else { throw OpenError(imageSpec: spec, step: step, errno: -result) }
        }
        var size: UInt64 = 0
        try check(rbd_get_size(connection.image, &size), "rbd_get_size")
        var fsid = [CChar](repeating: 0, count: 64)
        try check(rados_cluster_fsid(connection.cluster, &fsid, fsid.count), "rados_cluster_fsid")
        var id = [CChar](repeating: 0, count: 64)
        try check(rbd_get_id(connection.image, &id, id.count), "rbd_get_id")
        let poolID = rados_ioctx_get_id(connection.ioContext)
        byteCount = size
        imageID = Self.string(id)
        identity = "rbd:\(Self.string(fsid)):\(poolID):\(namespace):\(imageID)"
        current = Locked(connection)
    }

    /// Lets the image go (``Connection``'s deinit) once the calls still using it have returned; later calls fail
    /// with ESHUTDOWN.
    public func release() {
        current.withLock { $0 = nil }
    }

    /// Replaces the client with a new one, which holds no lock: read-only after this gateway was fenced (blocklisted,
    /// when every call on the old client fails with ESHUTDOWN), so that no write that began under the old client can
    /// go out through the new one; writable again before this gateway takes an image over.
    public func reconnect(readOnly: Bool) throws(OpenError) {
        let connection = try connect(readOnly)
        current.withLock { $0 = connection }
    }

    /// Whether the client in use opened the image read-only (a fenced gateway's).
    public var isReadOnly: Bool { current.withLock { $0?.readOnly ?? true } }

    /// The client in use, for one call.
    private func connection(_ operation: String) throws(BlockStoreError) -> Connection {
        guard let connection = current.withLock({ $0 }) else {
            throw BlockStoreError(operation: operation, errno: ESHUTDOWN)
        }
        return connection
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        try transfer("rbd_read2", count: buffer.count, at: offset) { image, offset, done in
            rbd_read2(
                image, offset, buffer.count - done,
                buffer.baseAddress!.advanced(by: done).assumingMemoryBound(to: CChar.self), 0)
        }
    }

    public func write(
        _ buffer: UnsafeRawBufferPointer, at offset: UInt64, forceUnitAccess: Bool
    ) throws(BlockStoreError) {
        try transfer("rbd_write2", count: buffer.count, at: offset) { image, offset, done in
            rbd_write2(
                image, offset, buffer.count - done,
                buffer.baseAddress!.advanced(by: done).assumingMemoryBound(to: CChar.self), 0)
        }
        // Without the client cache a completed write is in RADOS already; the flush is for a cache that ceph.conf
        // might turn back on.
        if forceUnitAccess { try synchronize() }
    }

    public func synchronize() throws(BlockStoreError) {
        let result = rbd_flush(try connection("rbd_flush").image)
        guard result >= 0 else { throw BlockStoreError(operation: "rbd_flush", errno: -result) }
    }

    public func unmap(offset: UInt64, length: UInt64) throws(BlockStoreError) {
        let result = rbd_discard(try connection("rbd_discard").image, offset, length)
        guard result >= 0 else { throw BlockStoreError(operation: "rbd_discard", errno: -result) }
    }

    /// Takes the image's exclusive lock for this client (`rbd_lock_acquire`): true when this client holds it, false
    /// when another client does (-EROFS, -EBUSY). A lock taken so is never handed over on another client's request:
    /// that client's writes fail instead, so initiators cannot make it move between gateways.
    public func acquireExclusiveLock() throws(BlockStoreError) -> Bool {
        let result = rbd_lock_acquire(try connection("rbd_lock_acquire").image, RBD_LOCK_MODE_EXCLUSIVE)
        if result == -EROFS || result == -EBUSY { return false }
        guard result >= 0 else { throw BlockStoreError(operation: "rbd_lock_acquire", errno: -result) }
        return true
    }

    /// The contents (at most 4 KiB) of the RADOS object `name` beside the image (its pool and namespace); nil when
    /// there is no such object.
    public func readObject(_ name: String) throws(BlockStoreError) -> [UInt8]? {
        let ioContext = try connection("rados_read").ioContext
        var bytes = [CChar](repeating: 0, count: 4096)
        let result = rados_read(ioContext, name, &bytes, bytes.count, 0)
        if result == -ENOENT { return nil }
        guard result >= 0 else { throw BlockStoreError(operation: "rados_read", errno: -result) }
        return bytes.prefix(Int(result)).map { UInt8(bitPattern: $0) }
    }

    /// Replaces the RADOS object `name` beside the image with `contents`.
    public func writeObject(_ name: String, _ contents: [UInt8]) throws(BlockStoreError) {
        let ioContext = try connection("rados_write_full").ioContext
        let result = contents.withUnsafeBytes { bytes in
            rados_write_full(ioContext, name, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        guard result >= 0 else { throw BlockStoreError(operation: "rados_write_full", errno: -result) }
    }

    /// Calls `call` (rbd_read2 or rbd_write2 of the bytes from `done` on, at `offset`) until all `count` bytes are
    /// through. A call that moves no bytes means past the end of the image (a shrink the device server has not seen
    /// yet): EIO.
    private func transfer(
        _ operation: String, count: Int, at offset: UInt64, _ call: (rbd_image_t, UInt64, Int) -> Int
    ) throws(BlockStoreError) {
        let image = try connection(operation).image
        var done = 0
        while done < count {
            let result = call(image, offset + UInt64(done), done)
            guard result > 0 else {
                throw BlockStoreError(operation: operation, errno: result == 0 ? EIO : Int32(clamping: -result))
            }
            done += result
        }
    }

    /// Breaks the image's exclusive lock, which blocklists its owner's client (a gateway that stopped answering), and
    /// takes it (`rbd_lock_get_owners`, `rbd_lock_break`, `rbd_lock_acquire`).
    public func breakExclusiveLockAndAcquire() throws(BlockStoreError) {
        let image = try connection("rbd_lock_break").image
        var mode = RBD_LOCK_MODE_EXCLUSIVE
        var owners = [UnsafeMutablePointer<CChar>?](repeating: nil, count: 8)
        var count = owners.count
        let listed = rbd_lock_get_owners(image, &mode, &owners, &count)
        // -ENOENT: nobody holds it any more.
        if listed >= 0 {
            defer { rbd_lock_get_owners_cleanup(&owners, count) }
            for owner in owners.prefix(count).compactMap({ $0 }) {
                let result = rbd_lock_break(image, mode, owner)
                guard result >= 0 || result == -ENOENT else {
                    throw BlockStoreError(operation: "rbd_lock_break", errno: -result)
                }
            }
        } else if listed != -ENOENT {
            throw BlockStoreError(operation: "rbd_lock_get_owners", errno: -listed)
        }
        let result = rbd_lock_acquire(image, RBD_LOCK_MODE_EXCLUSIVE)
        guard result >= 0 else { throw BlockStoreError(operation: "rbd_lock_acquire", errno: -result) }
    }

    /// From librbd's allocated extents (`rbd_diff_iterate2` against no snapshot), looking at most
    /// ``mappingWindow`` bytes ahead: a deallocated range longer than that is reported in pieces.
    public func mappingStatus(at offset: UInt64) throws(BlockStoreError) -> (mapped: Bool, length: UInt64) {
        guard offset < byteCount else { return (true, 0) }
        let length = min(byteCount - offset, Self.mappingWindow)
        let image = try connection("rbd_diff_iterate2").image
        var extents = MappedExtents(start: offset)
        let result = withUnsafeMutablePointer(to: &extents) { pointer in
            rbd_diff_iterate2(image, nil, offset, length, 1, 0, { extentOffset, extentLength, exists, argument in
                let extents = argument!.assumingMemoryBound(to: MappedExtents.self)
                return extents.pointee.add(offset: extentOffset, length: UInt64(extentLength), exists: exists != 0)
            }, pointer)
        }
        // The callback stops the iteration (with 1) once the answer is known.
        guard result >= 0 || result == -MappedExtents.stop else {
            throw BlockStoreError(operation: "rbd_diff_iterate2", errno: -result)
        }
        return extents.answer(windowEnd: offset + length)
    }

    /// How far ahead ``mappingStatus(at:)`` looks: 1 GiB, 256 objects of the default 4 MiB.
    static let mappingWindow: UInt64 = 1 << 30

    /// The state of one ``mappingStatus(at:)``: the extents librbd reports, in offset order, from `start`.
    struct MappedExtents {
        static let stop: Int32 = 1
        let start: UInt64
        /// The first allocated extent's offset, and the end of the allocated run from it.
        var firstAllocated: UInt64?
        var allocatedEnd: UInt64?

        init(start: UInt64) { self.start = start }

        /// Takes the next extent; returns ``stop`` once the answer cannot change.
        mutating func add(offset: UInt64, length: UInt64, exists: Bool) -> Int32 {
            let end = offset.addingReportingOverflow(length).partialValue
            // An extent that ends before `start` (librbd reports none) must not make the answer negative.
            guard exists, length > 0, end > start else { return 0 }
            if let allocatedEnd {
                // A gap after the allocated run ends it.
                guard offset <= allocatedEnd else { return Self.stop }
                self.allocatedEnd = max(allocatedEnd, end)
                return 0
            }
            if offset > start {
                // Deallocated from start up to here.
                firstAllocated = offset
                return Self.stop
            }
            firstAllocated = offset
            allocatedEnd = end
            return 0
        }

        func answer(windowEnd: UInt64) -> (mapped: Bool, length: UInt64) {
            switch (firstAllocated, allocatedEnd) {
            case (_, let end?): (true, min(end, windowEnd) - start)
            case (let first?, nil): (false, first - start)
            case (nil, nil): (false, windowEnd - start)
            }
        }
    }

    private static func string(_ characters: [CChar]) -> String {
        String(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
