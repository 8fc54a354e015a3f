import Foundation
import TOMLKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reading keys of a TOML table as the model's types, each misfit reported as a problem.
extension ConfigurationLoader {
    mutating func checkKeys(_ node: Node, allowed: [String]) {
        for key in node.table.keys.sorted() where !allowed.contains(key) {
            var message = "\(node.context)unknown key \"\(key)\""
            if let suggestion = allowed.min(by: { editDistance($0, key) < editDistance($1, key) }),
                editDistance(suggestion, key) <= 2
            {
                message += " (did you mean \"\(suggestion)\"?)"
            }
            report(node.path + [.key(key)], message)
        }
    }

    mutating func value(_ node: Node, _ key: String, required: Bool) -> (any TOMLValueConvertible)? {
        guard let value = node.table[key] else {
            if required { report(node.path, "\(node.context)\(key) is missing") }
            return nil
        }
        return value
    }

    mutating func string(_ node: Node, _ key: String, required: Bool = false) -> String? {
        guard let value = value(node, key, required: required) else { return nil }
        guard let string = value.string else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be a string")
            return nil
        }
        return string
    }

    mutating func bool(_ node: Node, _ key: String) -> Bool? {
        guard let value = value(node, key, required: false) else { return nil }
        guard let bool = value.bool else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be true or false")
            return nil
        }
        return bool
    }

    mutating func integer(
        _ node: Node, _ key: String, in range: ClosedRange<Int>, required: Bool = false
    ) -> Int? {
        guard let value = value(node, key, required: required) else { return nil }
        guard let integer = value.int else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be an integer")
            return nil
        }
        guard range.contains(integer) else {
            report(
                node.path + [.key(key)], "\(node.context)\(key) must be in \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return integer
    }

    /// A size: an integer number of bytes, or a string with a binary unit K, M, G or T ("1G").
    mutating func byteCount(_ node: Node, _ key: String) -> UInt64? {
        guard let value = value(node, key, required: false) else { return nil }
        let keyPath = node.path + [.key(key)]
        if let integer = value.int {
            guard integer > 0 else {
                report(keyPath, "\(node.context)\(key) must be positive")
                return nil
            }
            return UInt64(integer)
        }
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        guard var text = value.string else {
            report(keyPath, "\(node.context)\(key) must be a number of bytes or a string such as \"1G\"")
            return nil
        }
        var multiplier: UInt64 = 1
        if let last = text.last, let unit = units[Character(last.uppercased())] {
            multiplier = unit
            text.removeLast()
        }
        guard let number = UInt64(text), number > 0 else {
            report(
                keyPath,
                "\(node.context)\(key) \"\(value.string ?? "")\" must be a positive number"
                    + " with an optional unit K, M, G or T"
            )
            return nil
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: multiplier)
        guard !overflow, bytes <= UInt64(Int64.max) else {
            report(keyPath, "\(node.context)\(key) is too large")
            return nil
        }
        return bytes
    }

    /// A duration in milliseconds: an integer number of milliseconds, or a string with the unit
    /// `ms` or `s` ("500ms", "20s").
    mutating func milliseconds(_ node: Node, _ key: String, in range: ClosedRange<Int>) -> Int? {
        guard let value = value(node, key, required: false) else { return nil }
        let keyPath = node.path + [.key(key)]
        var milliseconds = value.int
        if milliseconds == nil, let text = value.string {
            if text.hasSuffix("ms") {
                milliseconds = Int(text.dropLast(2))
            } else if text.hasSuffix("s") {
                milliseconds = Int(text.dropLast()).flatMap { $0 <= Int.max / 1000 ? $0 * 1000 : nil }
            }
        }
        guard let milliseconds else {
            report(keyPath, "\(node.context)\(key) must be milliseconds, or a string such as \"20s\" or \"500ms\"")
            return nil
        }
        guard range.contains(milliseconds) else {
            report(
                keyPath,
                "\(node.context)\(key) must be in \(range.lowerBound)...\(range.upperBound) milliseconds")
            return nil
        }
        return milliseconds
    }

    /// INQUIRY identification text: printable ASCII (SPC-4 §4.3.1) of at most `maximumLength` bytes.
    mutating func identification(_ node: Node, _ key: String, maximumLength: Int) -> String? {
        guard let text = string(node, key) else { return nil }
        guard !text.isEmpty, text.utf8.count <= maximumLength, text.utf8.allSatisfy({ (0x20...0x7E).contains($0) })
        else {
            report(
                node.path + [.key(key)],
                "\(node.context)\(key) must be 1 to \(maximumLength) printable ASCII characters")
            return nil
        }
        return text
    }

    mutating func stringArray(_ node: Node, _ key: String) -> [String]? {
        guard let value = value(node, key, required: false) else { return nil }
        guard let array = value.array, let strings = Optional(array.compactMap(\.string)), strings.count == array.count
        else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be an array of strings")
            return nil
        }
        return strings
    }

    mutating func table(_ node: Node, _ key: String, context: String) -> Node? {
        guard let value = value(node, key, required: false) else { return nil }
        guard let table = value.table else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be a table")
            return nil
        }
        return Node(table: table, path: node.path + [.key(key)], context: context)
    }

    mutating func arrayOfTables(_ node: Node, _ key: String, header: String) -> [Node] {
        guard let value = value(node, key, required: false) else { return [] }
        guard let array = value.array, array.allSatisfy({ $0.table != nil }) else {
            report(node.path + [.key(key)], "\(node.context)\(key) must be an array of tables: write \(header)")
            return []
        }
        return array.enumerated().map { index, element in
            Node(table: element.table!, path: node.path + [.key(key), .index(index)], context: node.context)
        }
    }

    func isSymbolicLink(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFLNK
    }

    func absolute(_ path: String) -> String {
        path.hasPrefix("/") || path.isEmpty ? path : (baseDirectory as NSString).appendingPathComponent(path)
    }
}

/// Levenshtein distance, for "did you mean" hints on unknown keys.
private func editDistance(_ a: String, _ b: String) -> Int {
    let b = Array(b)
    var previous = Array(0...b.count)
    for (i, character) in a.enumerated() {
        var current = [i + 1]
        for j in b.indices {
            current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (character == b[j] ? 0 : 1)))
        }
        previous = current
    }
    return previous[b.count]
}
