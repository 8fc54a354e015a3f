import FerryConfig
import Testing

/// A configuration file's text as the backend tests load it: the configuration, or the messages of its problems.
enum ConfigurationText {
    static func load(_ text: String, baseDirectory: String) throws(ConfigurationError) -> FerryConfiguration {
        try FerryConfiguration(
            toml: text, fileName: "ferry.toml", baseDirectory: baseDirectory, defaultStateDirectory: "/var/lib/ferry")
    }

    /// The problems loading `text` reports; none when it loads.
    static func problems(_ text: String, baseDirectory: String) -> [String] {
        do throws(ConfigurationError) {
            _ = try load(text, baseDirectory: baseDirectory)
            return []
        } catch {
            return error.problems.map(\.message)
        }
    }

    /// What `ferryctl save-config` writes for `configuration`, after checking that it reads back the same.
    static func savedReadingBack(_ configuration: FerryConfiguration) throws -> String {
        let text = configuration.toml(defaultStateDirectory: "/var/lib/ferry")
        let loaded = try FerryConfiguration(
            toml: text, fileName: "saved.toml", baseDirectory: "/nonexistent", defaultStateDirectory: "/var/lib/ferry")
        #expect(loaded == configuration, "\(text)")
        return text
    }
}
