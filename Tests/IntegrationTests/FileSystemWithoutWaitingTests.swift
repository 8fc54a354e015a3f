import FerryBackends
import Foundation
import Testing

/// `FileBlockStore`'s reads and writes without waiting (`preadv2`/`pwritev2` with `RWF_NOWAIT`) on a real XFS, made
/// in a loop-mounted image: XFS takes buffered writes so, and the emulated backend then completes them on the
/// session's loop (ext4, where `/tmp` usually is, refuses them with EOPNOTSUPP). Needs root and xfsprogs.
@Suite(.serialized) struct FileSystemWithoutWaitingTests {
    @Test func xfsTakesWritesAndServesCachedReadsWithoutWaiting() async throws {
        let mkfs = try ExternalTool.locate("mkfs.xfs", package: "xfsprogs")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-xfs-\(UUID().uuidString)")
        let mountPoint = directory.appendingPathComponent("mnt").path
        let image = directory.appendingPathComponent("xfs.img").path
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // XFS's smallest file system is 300 MiB; the image is sparse.
        try await Self.run("/usr/bin/truncate", ["-s", "320M", image])
        try await Self.run(mkfs, ["-q", "-f", image])
        try await Self.run("/bin/mount", ["-o", "loop", image, mountPoint])
        defer { _ = try? Process.run(URL(fileURLWithPath: "/bin/umount"), arguments: [mountPoint]).waitUntilExit() }

        let store = try FileBlockStore(path: "\(mountPoint)/lun.img", createWithSize: 1 << 20)
        let written = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        // A write that must update the file's mtime cannot be taken without waiting (EAGAIN): the first in each
        // clock tick. A write that waits brings the mtime up to date (with other bytes, so that only a write
        // taken without waiting leaves `written` behind), and the next one is tried within the same tick, most
        // of the time even on a loaded machine. A file system that refuses such writes (ext4) refuses every try.
        let other = [UInt8](repeating: 0xA5, count: 8192)
        var took = false
        for _ in 0..<50 where !took {
            try other.withUnsafeBytes { try store.write($0, at: 4096, forceUnitAccess: false) }
            took = try written.withUnsafeBytes { try store.writeWithoutWaiting($0, at: 4096) }
        }
        #expect(took, "XFS refused 50 buffered writes with RWF_NOWAIT, each right after a write that waited")
        var read = [UInt8](repeating: 0, count: 8192)
        let served = try read.withUnsafeMutableBytes { try store.readWithoutWaiting(into: $0, at: 4096) }
        #expect(served, "the blocks just written are in the page cache")
        let same = read == written
        #expect(same, "the bytes read back are not those written")
    }

    private static func run(_ executable: String, _ arguments: [String]) async throws {
        let result = try await ExternalTool.run(executable, arguments, timeout: .seconds(60))
        guard result.status == 0 else {
            throw IntegrationFailure(
                "\(executable) \(arguments.joined(separator: " ")) failed (\(result.status)); this test needs root "
                    + "and a loop device:\n\(result.output)")
        }
    }
}
