// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Ferry",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "ferryd", targets: ["ferryd"]),
        .executable(name: "ferryctl", targets: ["ferryctl"]),
        .library(name: "FerryTarget", targets: ["FerryTarget"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // CRC32C (iSCSI digests) from ISA-L.
        .systemLibrary(
            name: "CISAL",
            pkgConfig: "libisal",
            providers: [.apt(["libisal-dev"])]
        ),
        // SCSI generic passthrough: libsgutils2 (sg_lib, sg_pt, sg_cmds) and the sg v3 ioctls.
        // Debian ships no pkg-config file for it, so the module map links sgutils2 by name.
        .systemLibrary(
            name: "CSGUtils",
            providers: [.apt(["libsgutils2-dev"])]
        ),
        // Ceph RBD images (`backend = "rbd"`): librbd and librados. Debian ships no pkg-config file for them, so
        // the module map links rbd and rados by name.
        .systemLibrary(
            name: "CRBD",
            providers: [.apt(["librbd-dev", "librados-dev"])]
        ),
        // preadv2/pwritev2 with RWF_NOWAIT: page-cache reads and writes that never wait.
        .systemLibrary(
            name: "CLinuxIO"
        ),
        // RFC 7143: PDUs, codec, digests, text negotiation, login, serial numbers. No I/O.
        .target(
            name: "ISCSIProtocol",
            dependencies: [
                "CISAL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // The lock every module uses (`Locked`): the API of Synchronization.Mutex on a pthread mutex, which
        // ThreadSanitizer sees (scripts/tsan).
        .target(
            name: "FerrySync",
            swiftSettings: strict
        ),
        // SAM-5 / SPC-4 / SBC-4 vocabulary and pure logic: CDBs, sense, status, INQUIRY, VPD and mode page data,
        // reservations and unit attentions. No threads, sleeps or I/O; FerrySync's lock guards the reservation and
        // unit attention state that every backend of a logical unit shares.
        .target(
            name: "SCSI",
            dependencies: [
                "FerrySync",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Backends behind one protocol: the emulated file/block backend here (its threaded SBC device server
        // `EmulatedBlockDevice` over a `BlockStore`, with EXTENDED COPY), SG_IO passthrough in FerryPassthrough.
        .target(
            name: "FerryBackends",
            dependencies: [
                "CLinuxIO",
                "FerrySync",
                "SCSI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The sg passthrough backend: real SCSI disks through /dev/sgN (async sg v3) or /dev/sdX (SG_IO).
        .target(
            name: "FerryPassthrough",
            dependencies: [
                "FerrySync",
                "CSGUtils",
                "SCSI",
                "FerryBackends",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The Ceph RBD backend: the emulated SBC disk over an RBD image (librbd), for Ferry gateways in front of Ceph.
        .target(
            name: "FerryRBD",
            dependencies: [
                "CRBD",
                "FerryBackends",
                "FerrySync",
                "SCSI",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Configuration model and TOML loader.
        .target(
            name: "FerryConfig",
            dependencies: [
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: strict
        ),
        // The session core (RFC 7143 §3.2.2, §4.2.2, §11.5): the CmdSN window, the per-task state machine with its
        // Data-Out and R2Ts, task management and its waiting, and each connection's transmit queue with its StatSN.
        // Events in, actions out; no I/O, threads or clocks.
        .target(
            name: "ISCSISession",
            dependencies: [
                "ISCSIProtocol",
                "SCSI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        // The target engine: portals, sessions, connections, ACLs; the shells that carry out the session core's actions.
        .target(
            name: "FerryTarget",
            dependencies: [
                "FerrySync",
                "ISCSIProtocol",
                "ISCSISession",
                "SCSI",
                "FerryBackends",
                "FerryPassthrough",
                "FerryRBD",
                "FerryConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "ferryd",
            dependencies: [
                "FerryTarget",
                "FerryConfig",
                "FerryControl",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The control protocol between ferryctl and ferryd (a Unix socket), shared by both.
        .target(
            name: "FerryControl",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "ferryctl",
            dependencies: [
                "FerryControl",
                "FerryConfig",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ISCSIProtocolTests",
            dependencies: [
                "ISCSIProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "FerrySyncTests",
            dependencies: ["FerrySync"]
        ),
        .testTarget(
            name: "SCSITests",
            dependencies: ["SCSI", "FerrySync", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "ISCSISessionTests",
            dependencies: ["ISCSISession", "ISCSIProtocol", "SCSI", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "FerryBackendsTests",
            dependencies: [
                "FerryBackends", "SCSI", "FerrySync", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "FerryTargetTests",
            dependencies: [
                "FerryTarget", "FerrySync", "ISCSIProtocol", "SCSI", "FerryConfig", "FerryBackends",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "FerryPassthroughTests",
            dependencies: [
                "FerryPassthrough", "FerryBackends", "SCSI", "FerrySync", .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "FerryControlTests",
            dependencies: ["FerryControl", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "FerryConfigTests",
            dependencies: ["FerryConfig"]
        ),
        // Reading iscsi-test-cu's output and its known-failures ratchet, for both suites that run it.
        .target(
            name: "ConformanceReporting",
            path: "Tests/ConformanceReporting"
        ),
        // A raw iSCSI initiator written from RFC 7143 alone, for tests that drive exact PDU sequences.
        .target(
            name: "RawISCSI",
            path: "Tests/RawISCSI"
        ),
        // Task management scenarios against a real device, run inside the VM test bed (Tests/VMTests).
        .executableTarget(
            name: "TMFProbe",
            dependencies: ["RawISCSI"],
            path: "Tests/TMFProbe"
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["ConformanceReporting", "RawISCSI", "FerryBackends"],
            exclude: ["conformance-known-failures.txt", "rbd-conformance-known-failures.txt"]
        ),
        // Real SCSI devices: boots Debian's kernel with scsi_debug under qemu (TCG) and runs
        // ferryd, iscsi-test-cu and open-iscsi inside it. The guest scripts are resources.
        .testTarget(
            name: "VMTests",
            dependencies: ["ConformanceReporting"],
            exclude: ["guest", "passthrough-known-failures.txt"]
        ),
    ],
    swiftLanguageModes: [.v6]
)

// libFuzzer targets (Tests/Fuzz), declared only when FERRY_FUZZ=1: they call libFuzzer's driver, which only a build
// with -sanitize=fuzzer links. `scripts/fuzz TARGET SECONDS` builds one with
// -sanitize=fuzzer and runs it on its committed corpus (Tests/Fuzz/Corpus/TARGET).
if Context.environment["FERRY_FUZZ"] == "1" {
    let fuzzTargets: [(name: String, dependencies: [Target.Dependency])] = [
        ("PDUFraming", ["ISCSIProtocol", .product(name: "NIOCore", package: "swift-nio")]),
        ("LoginNegotiation", ["ISCSIProtocol", .product(name: "NIOCore", package: "swift-nio")]),
        ("EmulatedDevice", ["FerryBackends", "SCSI", "FerrySync", .product(name: "NIOCore", package: "swift-nio")]),
        ("SessionCore", ["ISCSISession", "ISCSIProtocol", "SCSI", .product(name: "NIOCore", package: "swift-nio")]),
    ]
    package.targets.append(.target(name: "FuzzDriver", path: "Tests/Fuzz/Driver"))
    package.targets.append(.target(name: "FuzzSupport", dependencies: ["FuzzDriver"], path: "Tests/Fuzz/Support"))
    for fuzzTarget in fuzzTargets {
        package.targets.append(
            .executableTarget(
                name: "Fuzz\(fuzzTarget.name)", dependencies: ["FuzzSupport"] + fuzzTarget.dependencies,
                path: "Tests/Fuzz/\(fuzzTarget.name)"))
    }
}
