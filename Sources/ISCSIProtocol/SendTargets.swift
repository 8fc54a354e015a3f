/// A target as SendTargets reports it (RFC 7143 §13.3, Appendix C).
public struct SendTargetsEntry: Sendable, Hashable {
    public var name: String
    /// TargetAddress values, `domainname[:port][,portal-group-tag]`; IPv6 addresses in brackets
    /// (e.g. `192.0.2.1:3260,1`, `[2001:db8::1]:3260,1`).
    public var addresses: [String]

    public init(name: String, addresses: [String]) {
        self.name = name
        self.addresses = addresses
    }
}

/// Answers the SendTargets key.
public enum SendTargets {
    /// The key=value pairs answering `SendTargets=<value>`.
    ///
    /// - Parameters:
    ///   - value: `All`, a target name, or empty.
    ///   - sessionTarget: the target of a Normal session; nil in a Discovery session.
    ///   - visibleTargets: the targets this initiator may see (the engine applies the access lists).
    /// - Returns: nil when the value is not acceptable (the caller answers `SendTargets=Reject`).
    ///
    /// > In a Discovery session, a target MUST return all path information (IP address-port pairs and Target
    /// > Portal Group Tags) for the targets on the target Network Entity that the requesting initiator is
    /// > authorized to access. In a Normal session, SendTargets=<nothing> ... returns the session's target only.
    public static func response(
        to value: String, sessionTarget: String?, visibleTargets: [SendTargetsEntry]
    ) -> [TextKeyValue]? {
        let reported: [SendTargetsEntry]
        switch (value, sessionTarget) {
        case ("All", nil):
            reported = visibleTargets
        case ("", nil):
            return nil
        case ("All", let target?), ("", let target?):
            // A Normal session only learns about its own target.
            reported = visibleTargets.filter { $0.name == target }
        case (let name, nil):
            reported = visibleTargets.filter { $0.name == name }
        case (let name, let target?):
            reported = name == target ? visibleTargets.filter { $0.name == name } : []
        }
        var pairs: [TextKeyValue] = []
        for entry in reported {
            pairs.append(TextKeyValue("TargetName", entry.name))
            for address in entry.addresses {
                pairs.append(TextKeyValue("TargetAddress", address))
            }
        }
        return pairs
    }
}

extension SendTargetsEntry {
    /// The TargetAddress of a network portal, `host:port,tag`, with IPv6 hosts in brackets.
    ///
    /// A wildcard portal (`0.0.0.0` or `::`) listens on every address, and no initiator can connect to the wildcard
    /// itself, so it is reported as `localAddress`: the address the asking connection arrived on.
    /// > In a Discovery session, a target MUST return all path information (IP address-port pairs and Target
    /// > Portal Group Tags) for the targets on the target Network Entity ...
    ///
    /// - Parameters:
    ///   - host: the configured host, IPv6 without brackets.
    ///   - localAddress: the IP address of the connection's local end, without brackets; an IPv4-mapped IPv6
    ///     address (`::ffff:192.0.2.1`, what a dual-stack `::` listener sees) is reported as the IPv4 address.
    public static func targetAddress(host: String, port: Int, portalGroupTag: UInt16, localAddress: String?) -> String {
        var reported = host
        if isWildcard(host), let localAddress {
            let mappedPrefix = "::ffff:"
            let isMapped = localAddress.lowercased().hasPrefix(mappedPrefix) && localAddress.contains(".")
            reported = isMapped ? String(localAddress.dropFirst(mappedPrefix.count)) : localAddress
        }
        let bracketed = reported.contains(":") ? "[\(reported)]" : reported
        return "\(bracketed):\(port),\(portalGroupTag)"
    }

    /// Whether `host` is the IPv4 or IPv6 unspecified address.
    static func isWildcard(_ host: String) -> Bool {
        host == "0.0.0.0"
            || (host.contains(":") && host.split(separator: ":").allSatisfy { $0.allSatisfy { $0 == "0" } })
    }
}
