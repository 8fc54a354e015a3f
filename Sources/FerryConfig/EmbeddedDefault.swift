extension FerryConfiguration {
    /// The name of the target that ``embeddedDefault(stateDirectory:)`` serves.
    public static let defaultTargetName = "iqn.2026-11.dev.ferry:default"

    /// The size of the embedded default's disk: 1 GiB.
    public static let defaultDiskSize: UInt64 = 1 << 30

    /// What `ferryd` serves when it is given no configuration file: one portal on 127.0.0.1:3260
    /// (portal group tag 1) and the target `iqn.2026-11.dev.ferry:default` with LUN 0 on a sparse
    /// 1 GiB file `<stateDirectory>/default.img` of 512-byte blocks; no initiator ACL, no CHAP.
    public static func embeddedDefault(stateDirectory: String) -> FerryConfiguration {
        let directory = stateDirectory.hasSuffix("/") ? String(stateDirectory.dropLast()) : stateDirectory
        return FerryConfiguration(
            portals: [Portal(host: "127.0.0.1", port: PortalAddress.wellKnownPort, portalGroupTag: 1)],
            targets: [
                Target(
                    name: defaultTargetName,
                    luns: [LogicalUnit(lun: 0, path: "\(directory)/default.img", size: defaultDiskSize, blockSize: 512)]
                )
            ],
            stateDirectory: stateDirectory)
    }
}
