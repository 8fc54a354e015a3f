import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A portal address as written in the file: `127.0.0.1:3260`, `[::1]:3260`, `0.0.0.0` (port 3260).
struct PortalAddress: Hashable {
    var host: String
    var port: Int

    struct Problem: Error {
        var message: String
    }

    /// The IANA-assigned iSCSI port (RFC 7143 §13.1).
    static let wellKnownPort = 3260

    static func parse(_ text: String) -> Result<PortalAddress, Problem> {
        var host = Substring(text)
        var portText: Substring?
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else {
                return .failure(Problem(message: "has \"[\" without \"]\""))
            }
            let after = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return .failure(Problem(message: "has text after \"]\"")) }
                portText = after.dropFirst()
            }
            guard isIPv6(host) else { return .failure(Problem(message: "is not an IPv6 address in brackets")) }
        } else {
            if host.filter({ $0 == ":" }).count > 1 {
                return .failure(Problem(message: "is an IPv6 address without brackets: write [address]:port"))
            }
            if let colon = host.firstIndex(of: ":") {
                portText = host[host.index(after: colon)...]
                host = host[..<colon]
            }
            guard isIPv4(host) else { return .failure(Problem(message: "must be an IPv4 address or [IPv6]:port")) }
        }
        var port = wellKnownPort
        if let portText {
            guard let parsed = Int(portText), (1...65_535).contains(parsed) else {
                return .failure(Problem(message: "has a port outside 1...65535"))
            }
            port = parsed
        }
        return .success(PortalAddress(host: String(host), port: port))
    }

    private static func isIPv4(_ text: Substring) -> Bool {
        var address = in_addr()
        return inet_pton(AF_INET, String(text), &address) == 1
    }

    private static func isIPv6(_ text: Substring) -> Bool {
        var address = in6_addr()
        return inet_pton(AF_INET6, String(text), &address) == 1
    }
}

extension Portal {
    /// `host:port`, with IPv6 hosts in brackets: what `[[portal]] address` takes.
    public var address: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
