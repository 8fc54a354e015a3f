/// Syntax checks for iSCSI names (RFC 3720 §3.2.6, RFC 3980 for `naa.`).
enum ISCSIName {
    // > iSCSI names are composed only of displayable characters. [...] only the following
    // > ASCII characters (U+0000 to U+007F) are allowed: ASCII dash character ('-' = U+002d),
    // > ASCII dot character ('.' = U+002e), ASCII colon character (':' = U+003a), ASCII
    // > lowercase characters ('a'..'z' = U+0061..U+007a), ASCII digit characters ('0'..'9').
    // > [...] iSCSI names [...] MUST NOT be larger than 223 bytes.

    /// The longest name RFC 3720 §3.2.6.1 allows, in bytes.
    static let maximumLength = 223

    /// Why `name` is not a valid iSCSI name, or nil when it is one.
    static func problem(in name: String) -> String? {
        if name.isEmpty { return "is empty" }
        if name.utf8.count > maximumLength { return "is longer than \(maximumLength) bytes (RFC 3720 §3.2.6.1)" }
        if name.hasPrefix("iqn.") { return iqnProblem(in: name) }
        if name.hasPrefix("eui.") {
            // > Type "eui." (IEEE EUI-64 format) [...] followed by the EUI-64 identifier (16 ASCII-encoded
            // > hexadecimal digits).
            return isHex(name.dropFirst(4), count: [16]) ? nil : "eui. names carry exactly 16 hexadecimal digits"
        }
        if name.hasPrefix("naa.") {
            // RFC 3980: a 64-bit (16 digits) or 128-bit (32 digits) NAA identifier.
            return isHex(name.dropFirst(4), count: [16, 32]) ? nil : "naa. names carry 16 or 32 hexadecimal digits"
        }
        return "must start with \"iqn.\", \"eui.\" or \"naa.\" (RFC 3720 §3.2.6.3)"
    }

    // > Type "iqn." (iSCSI Qualified Name) [...]
    // > - The string "iqn."
    // > - A date code, in yyyy-mm format. [...]
    // > - A dot "."
    // > - The reversed domain name of the naming authority [...]
    // > - An optional ":", followed by a string of the assigning organization's choosing [...]
    private static func iqnProblem(in name: String) -> String? {
        if let bad = name.unicodeScalars.first(where: { !isAllowed($0) }) {
            if ("A"..."Z").contains(bad) {
                return "must be lowercase (RFC 3720 §3.2.6.2)"
            }
            return "contains \"\(bad)\": iSCSI names use only a-z, 0-9, '-', '.' and ':' (RFC 3720 §3.2.6.2)"
        }
        let body = name.utf8.dropFirst(4)
        let date = Array(body.prefix(7))
        let digits = UInt8(ascii: "0")...UInt8(ascii: "9")
        guard date.count == 7, date[4] == UInt8(ascii: "-"),
            date.indices.allSatisfy({ $0 == 4 || digits.contains(date[$0]) }),
            let month = Int(String(decoding: date[5...6], as: UTF8.self)), (1...12).contains(month)
        else {
            return "iqn. names go on with a yyyy-mm date, as in iqn.2026-11.dev.ferry:disk0"
        }
        let rest = String(decoding: body.dropFirst(7), as: UTF8.self)
        guard rest.hasPrefix(".") else {
            return "iqn. names need a \".\" and the naming authority after the date, as in iqn.2026-11.dev.ferry"
        }
        let afterDot = rest.dropFirst()
        let authority = afterDot.prefix(while: { $0 != ":" })
        let labels = authority.split(separator: ".", omittingEmptySubsequences: false)
        if authority.isEmpty || labels.contains(where: { $0.isEmpty || $0.hasPrefix("-") || $0.hasSuffix("-") }) {
            return "the naming authority after the date must be a reversed domain name, as in dev.ferry"
        }
        if afterDot.count > authority.count, afterDot.count == authority.count + 1 {
            return "nothing follows the \":\"; leave the \":\" out or name the device after it"
        }
        return nil
    }

    private static func isAllowed(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("0"..."9").contains(scalar) || scalar == "-" || scalar == "."
            || scalar == ":"
    }

    private static func isHex(_ text: Substring, count: Set<Int>) -> Bool {
        count.contains(text.utf8.count) && text.allSatisfy(\.isHexDigit)
    }
}
