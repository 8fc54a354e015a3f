import Foundation

/// The throw-away single-node Ceph cluster of `scripts/ceph-cluster` (one monitor, one bluestore OSD on a sparse file,
/// pool `rbd`), on a free port pair of 127.0.0.1, in a temporary directory of its own.
final class CephCluster {
    static let pool = "rbd"
    let directory: URL
    /// The cluster's ceph.conf, which names the client.admin keyring: what a LUN's `ceph_conf` and `rbd -c` take.
    var cephConf: String { directory.appendingPathComponent("ceph.conf").path }

    private init(directory: URL) { self.directory = directory }

    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/ceph-cluster").path

    /// Runs `body` with a cluster that is up (HEALTH_OK, pool `rbd` ready), and stops it afterwards.
    static func with<Result>(_ body: (CephCluster) async throws -> Result) async throws -> Result {
        for tool in ["ceph-mon", "ceph-osd", "rbd"] {
            _ = try ExternalTool.locate(tool, package: "ceph-mon, ceph-osd and ceph-common")
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-ceph-\(UUID().uuidString)")
        // The monitor's msgr2 port and the next one (msgr1).
        let port = try FerrydProcess.freePort()
        let started = try await ExternalTool.run(
            "/usr/bin/env", ["FERRY_CEPH_MON_PORT=\(port)", script, "start", directory.path], timeout: .seconds(120))
        let cluster = CephCluster(directory: directory)
        guard started.status == 0, !started.timedOut else {
            _ = try? await ExternalTool.run(script, ["stop", directory.path], timeout: .seconds(60))
            throw IntegrationFailure("scripts/ceph-cluster start failed:\n\(started.output.suffix(4000))")
        }
        do {
            let result = try await body(cluster)
            try await cluster.stop()
            return result
        } catch {
            try? await cluster.stop()
            throw error
        }
    }

    /// `rbd -c ceph.conf ARGUMENTS`; fails with its output unless it exits 0.
    @discardableResult
    func rbd(_ arguments: [String]) async throws -> String {
        let result = try await ExternalTool.run(
            try ExternalTool.locate("rbd", package: "ceph-common"), ["-c", cephConf] + arguments,
            timeout: .seconds(120))
        guard result.status == 0, !result.timedOut else {
            throw IntegrationFailure("rbd \(arguments.joined(separator: " ")) failed:\n\(result.output.suffix(4000))")
        }
        return result.output
    }

    /// Creates image `name` of `size` (`64M`) in pool `rbd`, and returns it as LUN 0's store for ``FerrydProcess``.
    func createImage(_ name: String, size: String) async throws -> FerrydProcess.RBDImage {
        try await rbd(["create", "--size", size, "\(Self.pool)/\(name)"])
        return FerrydProcess.RBDImage(pool: Self.pool, image: name, cephConf: cephConf)
    }

    private func stop() async throws {
        let stopped = try await ExternalTool.run(Self.script, ["stop", directory.path], timeout: .seconds(60))
        guard stopped.status == 0, !stopped.timedOut else {
            throw IntegrationFailure("scripts/ceph-cluster stop failed:\n\(stopped.output.suffix(4000))")
        }
    }
}
