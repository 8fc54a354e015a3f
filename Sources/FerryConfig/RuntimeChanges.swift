import Foundation

/// Changes an administrator makes to a running configuration (ferryctl lun/acl add/remove),
/// checked as the loader checks a file. Each returns the changed configuration or says, in one
/// sentence, why the change is refused.
extension FerryConfiguration {
    /// A change that cannot be made, and why.
    public struct ChangeRefused: Error, CustomStringConvertible {
        public var description: String
    }

    /// Adds `lun` to `target`: the number must be free, the path absolute and not used by another LUN, the
    /// block size 512 or 4096, a size (if any) a multiple of it, and a missing file needs a size.
    public func addingLogicalUnit(_ lun: LogicalUnit, to targetName: String) throws(ChangeRefused) -> FerryConfiguration
    {
        let index = try targetIndex(targetName)
        if targets[index].luns.contains(where: { $0.lun == lun.lun }) {
            throw ChangeRefused(
                description: "target \(targetName) already has LUN \(lun.lun); remove it first or pick another number")
        }
        guard lun.lun <= 16_383 else { throw ChangeRefused(description: "LUN \(lun.lun) is above 16383") }
        guard lun.path.hasPrefix("/") else {
            throw ChangeRefused(description: "the path must be absolute: \(lun.path)")
        }
        for target in targets {
            if let other = target.luns.first(where: { $0.path == lun.path }) {
                throw ChangeRefused(description: "\(lun.path) already backs LUN \(other.lun) of \(target.name)")
            }
        }
        guard lun.blockSize == 512 || lun.blockSize == 4096 else {
            throw ChangeRefused(description: "the block size must be 512 or 4096, not \(lun.blockSize)")
        }
        if let size = lun.size, size == 0 || size % UInt64(lun.blockSize) != 0 {
            throw ChangeRefused(
                description: "the size \(size) is not a positive multiple of the block size \(lun.blockSize)")
        }
        if lun.size == nil && !FileManager.default.fileExists(atPath: lun.path) {
            throw ChangeRefused(description: "\(lun.path) does not exist; give a size to create it as a sparse file")
        }
        var configuration = self
        configuration.targets[index].luns.append(lun)
        configuration.targets[index].luns.sort { $0.lun < $1.lun }
        return configuration
    }

    public func removingLogicalUnit(_ lun: UInt64, from targetName: String) throws(ChangeRefused) -> FerryConfiguration
    {
        let index = try targetIndex(targetName)
        guard targets[index].luns.contains(where: { $0.lun == lun }) else {
            throw ChangeRefused(description: "target \(targetName) has no LUN \(lun)")
        }
        var configuration = self
        configuration.targets[index].luns.removeAll { $0.lun == lun }
        return configuration
    }

    /// Adds `initiator` to the target's `allowed_initiators`. Note that an empty list admits everyone, so the first
    /// entry restricts the target to that initiator.
    public func addingAllowedInitiator(
        _ initiator: String, to targetName: String
    ) throws(ChangeRefused)
        -> FerryConfiguration
    {
        let index = try targetIndex(targetName)
        if let problem = ISCSIName.problem(in: initiator) {
            throw ChangeRefused(description: "initiator name \"\(initiator)\" \(problem)")
        }
        if targets[index].allowedInitiators.contains(where: { $0.caseInsensitiveCompare(initiator) == .orderedSame }) {
            throw ChangeRefused(description: "\(initiator) is already allowed on \(targetName)")
        }
        var configuration = self
        configuration.targets[index].allowedInitiators.append(initiator)
        return configuration
    }

    public func removingAllowedInitiator(
        _ initiator: String, from targetName: String
    ) throws(ChangeRefused)
        -> FerryConfiguration
    {
        let index = try targetIndex(targetName)
        let before = targets[index].allowedInitiators
        let after = before.filter { $0.caseInsensitiveCompare(initiator) != .orderedSame }
        guard after.count < before.count else {
            throw ChangeRefused(description: "\(initiator) is not in the allowed initiators of \(targetName)")
        }
        if after.isEmpty {
            throw ChangeRefused(
                description: "\(initiator) is the last allowed initiator of \(targetName); removing it would admit "
                    + "every initiator. Remove the target or add another initiator first")
        }
        var configuration = self
        configuration.targets[index].allowedInitiators = after
        return configuration
    }

    private func targetIndex(_ name: String) throws(ChangeRefused) -> Int {
        guard let index = targets.firstIndex(where: { $0.name == name }) else {
            let known = targets.map(\.name).joined(separator: ", ")
            throw ChangeRefused(description: "no target \(name); the targets are: \(known)")
        }
        return index
    }
}
