import FerryBackends
import Foundation
import Testing

@Suite struct FileBlockStoreTests {
    /// A fresh path in the temporary directory, removed when `body` returns.
    func withTemporaryPath(_ body: (String) throws -> Void) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-\(UUID().uuidString).img").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try body(path)
    }

    @Test func createsSparseFileWithOwnerOnlyPermissions() throws {
        try withTemporaryPath { path in
            let store = try FileBlockStore(path: path, createWithSize: 1 << 20)
            #expect(store.byteCount == 1 << 20)
            #expect(store.kind == "file")
            #expect(store.supportsUnmap && store.unmappedReadsZero)
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
            #expect(try store.mappingStatus(at: 0) == (false, 1 << 20))
        }
    }

    @Test func aSymbolicLinkAsTheLUNPathIsRefused() throws {
        try withTemporaryPath { path in
            let image = path + ".target"
            defer { try? FileManager.default.removeItem(atPath: image) }
            _ = try FileBlockStore(path: image, createWithSize: 1 << 20)
            try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: image)
            for readOnly in [false, true] {
                #expect {
                    _ = try FileBlockStore(path: path, createWithSize: 1 << 20, readOnly: readOnly)
                } throws: { error in
                    "\(error)" == "cannot open \(path): it is a symbolic link; give the file itself as the LUN's path"
                        + " (Ferry follows links only under /dev, to device nodes)"
                }
            }
            // A dangling link does not make Ferry create the file it points to.
            let dangling = path + ".dangling"
            defer { try? FileManager.default.removeItem(atPath: dangling) }
            try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: image + ".new")
            #expect(throws: FileBlockStore.OpenError.self) {
                try FileBlockStore(path: dangling, createWithSize: 1 << 20)
            }
            #expect(!FileManager.default.fileExists(atPath: image + ".new"))
            #expect(FileBlockStore.followsSymbolicLinks("/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"))
        }
    }

    @Test func writeReadUnmapAndMappingStatus() throws {
        try withTemporaryPath { path in
            let store = try FileBlockStore(path: path, createWithSize: 1 << 20)
            let payload = [UInt8](repeating: 0xab, count: 8192)
            try payload.withUnsafeBytes { try store.write($0, at: 65536, forceUnitAccess: true) }
            var back = [UInt8](repeating: 0, count: 8192)
            try back.withUnsafeMutableBytes { try store.read(into: $0, at: 65536) }
            #expect(back == payload)
            let status = try store.mappingStatus(at: 65536)
            #expect(status.mapped && status.length >= 8192)
            #expect(try store.mappingStatus(at: 0) == (false, 65536))
            try store.unmap(offset: 65536, length: 8192)
            try back.withUnsafeMutableBytes { try store.read(into: $0, at: 65536) }
            #expect(back.allSatisfy { $0 == 0 })
            try store.synchronize()
        }
    }

    @Test func errorsCarryErrnoAndPath() throws {
        try withTemporaryPath { path in
            #expect(throws: FileBlockStore.OpenError.self) { try FileBlockStore(path: path) }
            do {
                _ = try FileBlockStore(path: path)
            } catch let error as FileBlockStore.OpenError {
                #expect(error.errno == ENOENT && error.path == path)
            }
            let store = try FileBlockStore(path: path, createWithSize: 4096)
            var buffer = [UInt8](repeating: 0, count: 512)
            #expect(throws: BlockStoreError.self) {
                try buffer.withUnsafeMutableBytes { try store.read(into: $0, at: 4096) }
            }
        }
    }

    @Test func readOnlyStoreRefusesWrites() throws {
        try withTemporaryPath { path in
            _ = try FileBlockStore(path: path, createWithSize: 4096)
            let store = try FileBlockStore(path: path, readOnly: true)
            #expect(!store.supportsUnmap)
            let data = [UInt8](repeating: 1, count: 512)
            #expect(throws: BlockStoreError.self) {
                try data.withUnsafeBytes { try store.write($0, at: 0, forceUnitAccess: false) }
            }
        }
    }
}
