import Foundation
import Testing

/// docs/architecture.md's module graph is Package.swift's: every library and executable target (those under
/// Sources), each with the same dependencies. And the session core stays free of devices and sockets.
@Suite struct ArchitectureDocTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// Target name → Ferry's own modules and other packages' products it depends on, as `swift package
    /// dump-package` gives them.
    static func packageGraph() async throws -> [String: Set<String>] {
        // A scratch path of its own: the package's .build is locked by the `swift test` running this.
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-dump-package-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let result = try await ExternalTool.run(
            "/usr/bin/env",
            ["swift", "package", "--package-path", packageRoot.path, "--scratch-path", scratch.path, "dump-package"],
            timeout: .seconds(120))
        try #require(result.status == 0, "swift package dump-package failed: \(result.output)")
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any], "dump-package printed no object")
        let targets = try #require(json["targets"] as? [[String: Any]], "dump-package has no targets")
        var graph: [String: Set<String>] = [:]
        for target in targets {
            let name = try #require(target["name"] as? String)
            let type = try #require(target["type"] as? String)
            // Only the modules under Sources: test targets and the test helpers under Tests are not the product's.
            guard type != "test", target["path"] as? String == nil else { continue }
            var dependencies: Set<String> = []
            for dependency in target["dependencies"] as? [[String: Any]] ?? [] {
                guard let (_, value) = dependency.first, let parts = value as? [Any], let first = parts.first as? String else {
                    Issue.record("a dependency of \(name) dump-package describes oddly: \(dependency)")
                    continue
                }
                dependencies.insert(first)
            }
            graph[name] = dependencies
        }
        return graph
    }

    /// The list between the module-graph markers of docs/architecture.md:
    /// "- `Name` (what it is) → `Own`, `Own`; Product, Product" ("none" for nothing on either side).
    static func documentedGraph() throws -> [String: Set<String>] {
        let text = try String(contentsOf: packageRoot.appendingPathComponent("docs/architecture.md"), encoding: .utf8)
        let begin = try #require(text.range(of: "<!-- module graph: begin -->"), "no module graph in docs/architecture.md")
        let end = try #require(text.range(of: "<!-- module graph: end -->"), "the module graph has no end marker")
        var graph: [String: Set<String>] = [:]
        for line in text[begin.upperBound..<end.lowerBound].split(separator: "\n") where line.hasPrefix("- `") {
            let name = line.dropFirst(3).prefix { $0 != "`" }
            let arrow = try #require(line.range(of: " → "), "no arrow in: \(line)")
            let dependencies = line[arrow.upperBound...]
                .split(whereSeparator: { $0 == "," || $0 == ";" })
                .map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "`")) }
                .filter { !$0.isEmpty && $0 != "none" }
            #expect(graph[String(name)] == nil, "\(name) is listed twice")
            graph[String(name)] = Set(dependencies)
        }
        return graph
    }

    @Test func theDocumentedModuleGraphIsPackageSwifts() async throws {
        let package = try await Self.packageGraph()
        let documented = try Self.documentedGraph()
        #expect(documented.keys.sorted() == package.keys.sorted(), "the modules differ")
        for (name, dependencies) in package.sorted(by: { $0.key < $1.key }) {
            #expect(documented[name] == dependencies, "\(name): docs say \(documented[name] ?? []), Package.swift \(dependencies)")
        }
    }

    /// The session core and its tests build without libsgutils2, NIOPosix or any backend (issue 11).
    @Test func theSessionCoreReachesNoDeviceAndNoSocket() async throws {
        let package = try await Self.packageGraph()
        var reached: Set<String> = []
        var next = ["ISCSISession"]
        while let name = next.popLast() {
            for dependency in package[name] ?? [] where reached.insert(dependency).inserted { next.append(dependency) }
        }
        for forbidden in ["CSGUtils", "CRBD", "NIOPosix", "FerryBackends", "FerryPassthrough", "FerryRBD", "FerryTarget"] {
            #expect(!reached.contains(forbidden), "ISCSISession reaches \(forbidden)")
        }
    }
}
