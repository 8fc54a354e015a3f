public import FerryBackends
public import SCSI

/// Which gateway serves an RBD image's media access (implicit ALUA, docs/ceph.md): the one that holds the image's
/// exclusive lock is active/optimized, every other gateway standby.
///
/// The lock is taken when the logical unit opens, by whichever gateway comes first, and kept (`rbd_lock_acquire`):
/// a standby gateway's writes would fail with -EROFS rather than move it, so no initiator can make it bounce. The
/// owner writes its target port groups into the image's metadata (`ferry.alua.owner`), where the standby gateways
/// read them for REPORT TARGET PORT GROUPS, so that every gateway reports the same states.
public final class RBDImageOwnership: AsymmetricAccess {
    /// The image metadata key that names the owner's target port groups, comma-separated.
    public static let ownerKey = "ferry.alua.owner"

    private let store: RBDBlockStore
    /// This gateway's target port groups (its portals' portal group tags).
    public let localGroups: [UInt16]
    /// Every gateway's target port group, this one's included.
    public let allGroups: [UInt16]
    /// Whether this gateway holds the exclusive lock.
    public let ownsImage: Bool
    public let implicitTransitionSeconds: UInt8 = 30

    /// Takes the image's exclusive lock if no other gateway holds it, and says so in the image's metadata.
    public init(store: RBDBlockStore, localGroups: [UInt16], allGroups: [UInt16]) throws(BlockStoreError) {
        self.store = store
        self.localGroups = localGroups
        self.allGroups = allGroups
        ownsImage = try store.acquireExclusiveLock()
        if ownsImage {
            try store.setMetadata(Self.ownerKey, localGroups.map(String.init).joined(separator: ","))
        }
    }

    public var localState: AsymmetricAccessState { ownsImage ? .activeOptimized : .standby }

    public func targetPortGroups() -> [TargetPortGroup] {
        let owners =
            ownsImage
            ? localGroups : (store.metadata(Self.ownerKey) ?? "").split(separator: ",").compactMap { UInt16($0) }
        return allGroups.map { group in
            TargetPortGroup(
                identifier: group, state: owners.contains(group) ? .activeOptimized : .standby,
                relativeTargetPorts: [group])
        }
    }
}
