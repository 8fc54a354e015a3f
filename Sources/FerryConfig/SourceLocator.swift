/// A step on the way from the root of a TOML document to a value: a key or an array index.
enum PathComponent: Hashable, CustomStringConvertible {
    case key(String)
    case index(Int)

    var description: String {
        switch self {
        case .key(let key): ".\(key)"
        case .index(let index): "[\(index)]"
        }
    }
}

/// Where a value sits in the document, e.g. `target[1].lun[0].block_size`.
typealias KeyPath = [PathComponent]

/// Finds the line of a key in TOML source text.
///
/// TOMLKit reports lines for syntax errors only, so semantic problems are placed by scanning the
/// text: table headers (`[limits]`, `[[target]]`, `[[target.lun]]`) and `key = value` lines are
/// recorded under the path they define. Values inside inline tables and multi-line arrays are not
/// tracked; they are placed at the line of the key that holds them.
struct SourceLocator {
    private var lines: [String: Int] = [:]

    init(source: String) {
        var current: KeyPath = []
        var arrayCounts: [String: Int] = [:]
        var openMultilineString: Substring?
        for (number, rawLine) in source.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.drop(while: { $0 == " " || $0 == "\t" })
            if let delimiter = openMultilineString {
                if line.contains(delimiter) { openMultilineString = nil }
                continue
            }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") {
                let isArray = line.hasPrefix("[[")
                guard let close = line.firstIndex(of: "]") else { continue }
                let name = line[line.index(line.startIndex, offsetBy: isArray ? 2 : 1)..<close]
                let keys = Self.splitDottedKey(name)
                var resolved: KeyPath = []
                for (position, key) in keys.enumerated() {
                    resolved.append(.key(key))
                    let resolvedName = Self.name(resolved)
                    if isArray && position == keys.count - 1 {
                        let count = arrayCounts[resolvedName, default: 0]
                        arrayCounts[resolvedName] = count + 1
                        resolved.append(.index(count))
                    } else if let count = arrayCounts[resolvedName] {
                        resolved.append(.index(count - 1))
                    }
                }
                current = resolved
                record(resolved, line: number + 1)
                continue
            }
            guard let equals = line.firstIndex(of: "=") else { continue }
            let keys = Self.splitDottedKey(line[..<equals])
            guard !keys.isEmpty, keys.allSatisfy({ !$0.isEmpty }) else { continue }
            record(current + keys.map(PathComponent.key), line: number + 1)
            let value = line[line.index(after: equals)...]
            for delimiter in [#"""""#, "'''"] where value.contains(delimiter) {
                if value.components(separatedBy: delimiter).count == 2 { openMultilineString = Substring(delimiter) }
            }
        }
    }

    /// The line of `path`, or of the nearest enclosing key or table that the scan found.
    func line(of path: KeyPath) -> Int? {
        var path = path
        while !path.isEmpty {
            if let line = lines[Self.name(path)] { return line }
            path.removeLast()
        }
        return nil
    }

    private mutating func record(_ path: KeyPath, line: Int) {
        let name = Self.name(path)
        if lines[name] == nil { lines[name] = line }
    }

    private static func name(_ path: KeyPath) -> String {
        path.map(\.description).joined()
    }

    /// Splits `a.b."c.d"` into its keys, stripping quotes and blanks.
    private static func splitDottedKey(_ text: Substring) -> [String] {
        var keys: [String] = []
        var key = ""
        var quote: Character?
        for character in text {
            if let open = quote {
                if character == open { quote = nil } else { key.append(character) }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == "." {
                keys.append(key)
                key = ""
            } else if character != " " && character != "\t" {
                if !(character.isLetter || character.isNumber || character == "_" || character == "-") { return [] }
                key.append(character)
            }
        }
        keys.append(key)
        return keys
    }
}
