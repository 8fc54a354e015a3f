import FerrySync
public import SCSI

/// A logical unit as a source or destination of EXTENDED COPY: its store, geometry, the NAA
/// designator a CSCD descriptor names it by, and the reservations its commands are checked against.
public struct CopyEndpoint: Sendable {
    public var store: any BlockStore
    public var blockSize: Int
    public var blockCount: UInt64
    /// The NAA designator bytes of the logical unit (VPD page 83h), 8 or 16 bytes.
    public var designator: [UInt8]
    /// Whether the logical unit refuses writes now (read-only, or SWP set in its control mode page).
    public var isWriteProtected: @Sendable () -> Bool
    /// The SPC-2 and persistent reservations of the logical unit; nil for one that has none.
    public var reservations: ReservationState?
    /// The write ordering lock of the logical unit, held shared around each read and write of the
    /// copy so that COMPARE AND WRITE, WRITE ATOMIC and ORWRITE stay atomic with respect to it.
    var ordering: WriteOrderingLock?

    public init(
        store: any BlockStore, blockSize: Int, blockCount: UInt64, designator: [UInt8],
        isWriteProtected: @escaping @Sendable () -> Bool = { false }, reservations: ReservationState? = nil
    ) {
        self.store = store
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.designator = designator
        self.isWriteProtected = isWriteProtected
        self.reservations = reservations
    }

    /// Whether this logical unit is the same one as `other` (the same store).
    func isSame(as other: CopyEndpoint) -> Bool {
        store === other.store
    }
}

/// The logical units that EXTENDED COPY may name as copy targets, by NAA designator: those of one
/// target node, and only those.
///
/// Each target node has its own directory, and the device servers of its logical units look copy
/// targets up there. A designator of another target's logical unit is not in it, so it resolves
/// exactly as a designator that exists nowhere (CVE-2020-28374 was LIO resolving designators of
/// every backstore of the system). The node keeps the directory equal to its LUN map: a logical
/// unit removed from the map is gone from the directory at once.
public final class CopyTargetDirectory: Sendable {
    private let endpoints = Locked<[[UInt8]: CopyEndpoint]>([:])

    public init() {}

    /// Adds `endpoint`, replacing one with the same designator.
    public func register(_ endpoint: CopyEndpoint) {
        endpoints.withLock { $0[endpoint.designator] = endpoint }
    }

    /// Removes `endpoint`; a different logical unit registered since under the same designator stays.
    public func unregister(_ endpoint: CopyEndpoint) {
        endpoints.withLock { endpoints in
            guard let registered = endpoints[endpoint.designator], registered.isSame(as: endpoint) else { return }
            endpoints.removeValue(forKey: endpoint.designator)
        }
    }

    /// Holds exactly `newEndpoints` from now on.
    public func replaceAll(with newEndpoints: [CopyEndpoint]) {
        let table = Dictionary(newEndpoints.map { ($0.designator, $0) }, uniquingKeysWith: { first, _ in first })
        endpoints.withLock { $0 = table }
    }

    public func lookup(designator: [UInt8]) -> CopyEndpoint? {
        endpoints.withLock { $0[designator] }
    }
}
