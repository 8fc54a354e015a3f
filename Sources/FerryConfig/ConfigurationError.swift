/// Everything wrong with a configuration file, each problem with the line it is on.
///
/// The loader checks the whole file before it gives up, so one run of `ferryd --check-config`
/// lists every problem rather than the first one.
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// One problem: `ferry.toml:12: target "iqn…" lun 0: block_size must be 512 or 4096`.
    public struct Problem: Sendable, Hashable, CustomStringConvertible {
        /// The configuration file as it was named to the loader.
        public var file: String
        /// 1-based line, or nil when the problem is about something the file lacks.
        public var line: Int?
        public var message: String

        public init(file: String, line: Int?, message: String) {
            self.file = file
            self.line = line
            self.message = message
        }

        public var description: String {
            if let line { "\(file):\(line): \(message)" } else { "\(file): \(message)" }
        }
    }

    /// In the order of the file, never empty.
    public var problems: [Problem]

    public init(problems: [Problem]) {
        precondition(!problems.isEmpty, "a ConfigurationError has at least one problem")
        self.problems = problems
    }

    /// One problem per line.
    public var description: String { problems.map(\.description).joined(separator: "\n") }
}
