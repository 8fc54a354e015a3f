import Synchronization

/// A logical unit as a source or destination of EXTENDED COPY.
public struct CopyEndpoint: Sendable {
    public var store: any BlockStore
    public var blockSize: Int
    public var blockCount: UInt64
    /// The NAA designator bytes of the logical unit (VPD page 83h).
    public var designator: [UInt8]

    public init(store: any BlockStore, blockSize: Int, blockCount: UInt64, designator: [UInt8]) {
        self.store = store
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.designator = designator
    }
}

/// The logical units EXTENDED COPY may name as copy targets, by NAA designator.
public final class CopyTargetDirectory: Sendable {
    private let endpoints = Mutex<[[UInt8]: CopyEndpoint]>([:])

    public init() {}

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
