import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// CHAP credentials: inline or in a secret file, long enough, each secret used once.
extension ConfigurationLoader {
    /// The smallest CHAP secret without IPsec: RFC 7143 §9.2.1 asks for IPsec below 96 random bits.
    static let minimumSecretLength = 12

    mutating func chap(from node: Node) -> CHAPCredentials? {
        checkKeys(node, allowed: ["user", "secret", "secret_file"])
        let user = string(node, "user", required: true)
        if let user, user.isEmpty {
            report(node.path + [.key("user")], "\(node.context)user is empty")
        }
        let inline = string(node, "secret")
        let file = string(node, "secret_file")
        var secret: String?
        switch (inline, file) {
        case (nil, nil):
            report(node.path, "\(node.context)give secret or secret_file")
        case (.some, .some):
            report(node.path + [.key("secret_file")], "\(node.context)give secret or secret_file, not both")
        case (let inline?, nil):
            secret = inline
        case (nil, let file?):
            secret = readSecretFile(absolute(file), node: node)
        }
        if inline != nil, let inlineSecretExposure, !reportedInlineSecretExposure {
            // Reported once, at the first inline secret: the remedy is the same for all of them.
            reportedInlineSecretExposure = true
            report(
                node.path + [.key("secret")],
                "\(node.context)secret is inline in \(inlineSecretExposure), or move the secret to a secret_file")
        }
        if let secret, secret.utf8.count < Self.minimumSecretLength {
            report(
                node.path + [.key(file == nil ? "secret" : "secret_file")],
                "\(node.context)the secret must be at least \(Self.minimumSecretLength) bytes (RFC 7143 §9.2.1)")
            return nil
        }
        guard let user, let secret else { return nil }
        let secretKey = node.path + [.key(file == nil ? "secret" : "secret_file")]
        secretUses.append((secret, String(node.context.dropLast(2)), secretKey))
        return CHAPCredentials(user: user, secret: secret, secretFile: file.map { absolute($0) })
    }

    /// Each CHAP secret may authenticate one party in one place: a secret shared by two places lets
    /// a party that knows it for one of them pass the other, e.g. by reflecting a target's challenge
    /// through a mutual CHAP exchange.
    mutating func checkSecretReuse() {
        for (index, use) in secretUses.enumerated() {
            guard let first = secretUses[..<index].first(where: { $0.secret == use.secret }) else { continue }
            let firstLine = locator.line(of: first.path).map { " (line \($0))" } ?? ""
            // > Any CHAP secret used for initiator authentication MUST NOT be configured for
            // > authentication of any target, and any CHAP secret used for target authentication
            // > MUST NOT be configured for authentication of any initiator. (RFC 7143 §9.2.1)
            report(
                use.path,
                "\(use.place): the same secret as \(first.place)\(firstLine); give each its own secret."
                    + " RFC 7143 §9.2.1: \"Any CHAP secret used for initiator authentication MUST NOT be configured"
                    + " for authentication of any target\"")
        }
    }

    private mutating func readSecretFile(_ path: String, node: Node) -> String? {
        let keyPath = node.path + [.key("secret_file")]
        var status = stat()
        guard stat(path, &status) == 0 else {
            report(keyPath, "\(node.context)cannot read secret_file \(path): \(String(cString: strerror(errno)))")
            return nil
        }
        if let exposure = secretExposure(of: status) {
            report(keyPath, "\(node.context)secret_file \(path) \(exposure)")
            return nil
        }
        guard let contents = FileManager.default.contents(atPath: path) else {
            report(keyPath, "\(node.context)cannot read secret_file \(path)")
            return nil
        }
        var secret = String(decoding: contents, as: UTF8.self)
        while secret.hasSuffix("\n") || secret.hasSuffix("\r") { secret.removeLast() }
        return secret
    }
}

/// Why a file with `status` must not hold a secret: readable by group or others, or owned by
/// someone else than root and the user running ferryd; nil when it may.
func secretExposure(of status: stat) -> String? {
    if status.st_mode & 0o077 != 0 {
        return "is accessible by group or others (mode \(String(status.st_mode & 0o777, radix: 8))); chmod 600 it"
    }
    if status.st_uid != 0 && status.st_uid != geteuid() {
        return "must be owned by root or by the user running ferryd"
    }
    return nil
}
