import Synchronization

/// A logical unit as a source or destination of EXTENDED COPY: its store, geometry and the NAA
/// designator a CSCD descriptor names it by.
public struct CopyEndpoint: Sendable {
    public var store: any BlockStore
    public var blockSize: Int
    public var blockCount: UInt64
    /// The NAA designator bytes of the logical unit (VPD page 83h), 8 or 16 bytes.
    public var designator: [UInt8]
    /// Whether the logical unit refuses writes now (read-only, or SWP set in its control mode page).
    public var isWriteProtected: @Sendable () -> Bool

    public init(
        store: any BlockStore, blockSize: Int, blockCount: UInt64, designator: [UInt8],
        isWriteProtected: @escaping @Sendable () -> Bool = { false }
    ) {
        self.store = store
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.designator = designator
        self.isWriteProtected = isWriteProtected
    }
}

/// The logical units of a target that EXTENDED COPY may name as copy targets, by NAA designator.
/// The target registers each logical unit when it comes up and unregisters it when it goes away.
public final class CopyTargetDirectory: Sendable {
    private let endpoints = Mutex<[[UInt8]: CopyEndpoint]>([:])

    public init() {}

    /// Adds `endpoint`, replacing one with the same designator.
    public func register(_ endpoint: CopyEndpoint) {
        endpoints.withLock { $0[endpoint.designator] = endpoint }
    }

    public func unregister(designator: [UInt8]) {
        endpoints.withLock { _ = $0.removeValue(forKey: designator) }
    }

    public func lookup(designator: [UInt8]) -> CopyEndpoint? {
        endpoints.withLock { $0[designator] }
    }
}
