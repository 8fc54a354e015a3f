import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// An error that says what went wrong; swift-testing prints it as is.
public struct RawISCSIFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A PDU as it came off the wire: the 48-byte BHS and the data segment without padding.
public struct RawPDU: Sendable {
    public var header: [UInt8]
    public var data: [UInt8]

    public init(header: [UInt8], data: [UInt8]) {
        self.header = header
        self.data = data
    }

    /// The opcode without the I bit.
    public var opcode: UInt8 { header[0] & 0x3f }
    public var flags: UInt8 { header[1] }
    public var initiatorTaskTag: UInt32 { Self.uint32(header, at: 16) }
    public var statSN: UInt32 { Self.uint32(header, at: 24) }
    public var expCmdSN: UInt32 { Self.uint32(header, at: 28) }
    /// Login Response: Status-Class and Status-Detail (RFC 7143 §11.13.5).
    public var loginStatus: (statusClass: UInt8, statusDetail: UInt8) { (header[36], header[37]) }
    /// Reject: the reason code (RFC 7143 §11.17.1).
    public var rejectReason: UInt8 { header[2] }
    /// The key=value pairs of a text data segment, in order.
    public var keys: [(key: String, value: String)] { Self.textKeys(data) }

    public func value(_ key: String) -> String? { keys.first { $0.key == key }?.value }

    public static func uint32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        bytes[offset..<offset + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }

    public static func textKeys(_ data: [UInt8]) -> [(key: String, value: String)] {
        data.split(separator: 0).compactMap { pair in
            guard let equals = pair.firstIndex(of: UInt8(ascii: "=")) else { return nil }
            return (
                String(decoding: pair[..<equals], as: UTF8.self), String(decoding: pair[(equals + 1)...], as: UTF8.self)
            )
        }
    }
}

/// Opcodes as RFC 7143 §11.1.1.1 numbers them.
public enum RawOpcode {
    public static let nopOut: UInt8 = 0x00
    public static let scsiCommand: UInt8 = 0x01
    public static let loginRequest: UInt8 = 0x03
    public static let textRequest: UInt8 = 0x04
    public static let nopIn: UInt8 = 0x20
    public static let scsiResponse: UInt8 = 0x21
    public static let loginResponse: UInt8 = 0x23
    public static let textResponse: UInt8 = 0x24
    public static let reject: UInt8 = 0x3f
}

/// How an initiator authenticates in a raw login.
public struct RawCHAP {
    public var algorithm: UInt8
    public var user: String
    public var secret: String
    /// For mutual CHAP: the target's expected name and secret.
    public var target: (user: String, secret: String)?

    public init(algorithm: UInt8, user: String, secret: String, target: (user: String, secret: String)? = nil) {
        self.algorithm = algorithm
        self.user = user
        self.secret = secret
        self.target = target
    }
}

/// What a raw login ended with.
public struct RawLoginResult {
    /// The last Login Response.
    public var response: RawPDU
    /// Every key the target sent during the login.
    public var keys: [(key: String, value: String)]
    /// For mutual CHAP: whether the target proved the expected secret (nil when not asked).
    public var targetVerified: Bool?

    public var succeeded: Bool { response.loginStatus == (0, 0) && response.flags & 0x83 == 0x83 }
    public func value(_ key: String) -> String? { keys.last { $0.key == key }?.value }
}

/// A blocking-socket iSCSI initiator written from RFC 7143 alone (it imports nothing of Ferry): it builds BHSs
/// byte by byte, so that the tests check Ferry against the standard rather than against its own codec.
public final class RawISCSIClient {
    private let descriptor: Int32
    private var receiveBuffer: [UInt8] = []
    public private(set) var headerDigest = false
    public private(set) var dataDigest = false
    public let isid: [UInt8]
    private var initiatorTaskTag: UInt32 = 1
    /// The CmdSN of the next non-immediate command: whoever sends one advances it.
    public var cmdSN: UInt32 = 1
    public private(set) var expStatSN: UInt32 = 0
    public private(set) var tsih: UInt16 = 0
    /// The MaxRecvDataSegmentLength the target declared during login.
    public private(set) var targetMaxRecvDataSegmentLength = 8192

    /// Connects to 127.0.0.1:`port`, from `sourceAddress` (another loopback address, such as 127.0.0.2) when given;
    /// every receive gives up after `timeout`. `isid` defaults to a random one.
    public init(
        port: Int, isid: [UInt8]? = nil, timeout: Duration = .seconds(10), sourceAddress: String? = nil
    ) throws {
        let descriptor = try Self.connectToLoopback(port: port, from: sourceAddress)
        var interval = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        self.descriptor = descriptor
        // A random qualifier under the "random" ISID type (RFC 7143 §11.12.5: T = 11b).
        self.isid = isid ?? [0xc0] + (0..<5).map { _ in UInt8.random(in: 0...255) }
    }

    deinit { close(descriptor) }

    /// The local TCP port of the connection: the port ferryd logs as the `peer` of this connection.
    public var localPort: Int {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let found = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) == 0 }
        }
        return found ? Int(UInt16(bigEndian: address.sin_port)) : 0
    }

    /// A TCP socket connected to 127.0.0.1:`port`, bound to `sourceAddress` (an IPv4 address) when given.
    public static func connectToLoopback(port: Int, from sourceAddress: String? = nil) throws -> Int32 {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw RawISCSIFailure("socket() failed: errno \(errno)") }
        if let sourceAddress {
            var source = sockaddr_in()
            source.sin_family = sa_family_t(AF_INET)
            guard inet_pton(AF_INET, sourceAddress, &source.sin_addr) == 1 else {
                close(descriptor)
                throw RawISCSIFailure("not an IPv4 address: \(sourceAddress)")
            }
            let bound = withUnsafePointer(to: &source) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            guard bound else {
                close(descriptor)
                throw RawISCSIFailure("cannot bind to \(sourceAddress): errno \(errno)")
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            close(descriptor)
            throw RawISCSIFailure("cannot connect to 127.0.0.1:\(port): errno \(errno)")
        }
        return descriptor
    }

    // MARK: Bytes

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard written > 0 else { throw RawISCSIFailure("send failed: errno \(errno)") }
            offset += written
        }
    }

    /// Half-closes nothing: shuts the whole socket so that the target sees EOF.
    public func shutdown() { _ = Glibc.shutdown(descriptor, Int32(SHUT_RDWR)) }

    /// Reads exactly `count` bytes; nil at EOF (or a reset).
    private func receive(_ count: Int) throws -> [UInt8]? {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while receiveBuffer.count < count {
            let read = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if read == 0 { return nil }
            if read < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    throw RawISCSIFailure("no answer from the target in time")
                }
                if errno == ECONNRESET { return nil }
                throw RawISCSIFailure("recv failed: errno \(errno)")
            }
            receiveBuffer += chunk[..<read]
        }
        let bytes = Array(receiveBuffer[..<count])
        receiveBuffer.removeFirst(count)
        return bytes
    }

    /// The next PDU, or nil when the target closed the connection. Checks digests when they are on.
    public func receivePDU() throws -> RawPDU? {
        guard let header = try receive(48) else { return nil }
        let ahsLength = Int(header[4]) * 4
        if ahsLength > 0, try receive(ahsLength) == nil { return nil }
        if headerDigest {
            guard let digest = try receive(4) else { return nil }
            guard RawPDU.uint32(digest, at: 0) == CRC32C.checksum(header) else {
                throw RawISCSIFailure("target sent a wrong header digest")
            }
        }
        let length = Int(header[5]) << 16 | Int(header[6]) << 8 | Int(header[7])
        var data: [UInt8] = []
        if length > 0 {
            guard let padded = try receive((length + 3) & ~3) else { return nil }
            data = Array(padded[..<length])
            if dataDigest {
                guard let digest = try receive(4) else { return nil }
                guard RawPDU.uint32(digest, at: 0) == CRC32C.checksum(padded) else {
                    throw RawISCSIFailure("target sent a wrong data digest")
                }
            }
        }
        let pdu = RawPDU(header: header, data: data)
        if pdu.opcode != RawOpcode.loginResponse || pdu.loginStatus == (0, 0) {
            expStatSN = pdu.statSN &+ 1
        }
        return pdu
    }

    /// The next PDU if one starts arriving within `timeout`, nil if none does; fails when the target closed the
    /// connection. A PDU that has begun to arrive is read whole (under the receive timeout of `init`).
    public func receivePDU(within timeout: Duration) throws -> RawPDU? {
        if receiveBuffer.isEmpty {
            var descriptorToPoll = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(clamping: timeout.components.seconds * 1000
                + timeout.components.attoseconds / 1_000_000_000_000_000)
            let ready = poll(&descriptorToPoll, 1, max(0, milliseconds))
            if ready < 0 && errno != EINTR { throw RawISCSIFailure("poll failed: errno \(errno)") }
            if ready <= 0 { return nil }
        }
        guard let pdu = try receivePDU() else { throw RawISCSIFailure("the target closed the connection") }
        return pdu
    }

    /// The next PDU; fails when the target closed the connection instead.
    public func expectPDU() throws -> RawPDU {
        guard let pdu = try receivePDU() else { throw RawISCSIFailure("the target closed the connection") }
        return pdu
    }

    /// Whether the target closes the connection (after any PDUs it still sends, which are returned).
    public func drainUntilClosed() throws -> [RawPDU] {
        var received: [RawPDU] = []
        while let pdu = try receivePDU() { received.append(pdu) }
        return received
    }

    // MARK: Building PDUs

    /// A BHS with the opcode (and I bit), flags, ITT and the common sequence fields at bytes 24-31.
    public func header(opcode: UInt8, immediate: Bool = false, flags: UInt8, initiatorTaskTag: UInt32) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 48)
        header[0] = opcode | (immediate ? 0x40 : 0)
        header[1] = flags
        Self.put(initiatorTaskTag, into: &header, at: 16)
        Self.put(cmdSN, into: &header, at: 24)
        Self.put(expStatSN, into: &header, at: 28)
        return header
    }

    /// The bytes of a whole PDU: header (with its digest), padded data (with its digest).
    public func encode(header: [UInt8], data: [UInt8] = []) -> [UInt8] {
        var header = header
        header[5] = UInt8(truncatingIfNeeded: data.count >> 16)
        header[6] = UInt8(truncatingIfNeeded: data.count >> 8)
        header[7] = UInt8(truncatingIfNeeded: data.count)
        var bytes = header
        if headerDigest { Self.append(CRC32C.checksum(header), to: &bytes) }
        if !data.isEmpty {
            let padded = data + [UInt8](repeating: 0, count: (4 - data.count % 4) % 4)
            bytes += padded
            if dataDigest { Self.append(CRC32C.checksum(padded), to: &bytes) }
        }
        return bytes
    }

    public func nextTaskTag() -> UInt32 {
        initiatorTaskTag &+= 1
        return initiatorTaskTag
    }

    public static func put(_ value: UInt32, into bytes: inout [UInt8], at offset: Int) {
        for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (24 - 8 * index)) }
    }

    public static func append(_ value: UInt32, to bytes: inout [UInt8]) {
        for index in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: value >> (24 - 8 * index))) }
    }

    public static func text(_ pairs: [(String, String)]) -> [UInt8] {
        pairs.flatMap { Array("\($0.0)=\($0.1)".utf8) + [0] }
    }

    // MARK: Login

    /// One Login Request (RFC 7143 §11.12) with CSG/NSG and T, answered by one Login Response.
    public func loginRequest(currentStage: UInt8, nextStage: UInt8, transit: Bool, keys: [(String, String)]) throws -> RawPDU {
        var bytes = header(
            opcode: RawOpcode.loginRequest, immediate: true,
            flags: (transit ? 0x80 : 0) | currentStage << 2 | (transit ? nextStage : 0), initiatorTaskTag: 0x1000)
        bytes[2] = 0  // VersionMax
        bytes[3] = 0  // VersionMin
        bytes.replaceSubrange(8..<14, with: isid)
        bytes[14] = UInt8(tsih >> 8)
        bytes[15] = UInt8(tsih & 0xff)
        // CID 0 (bytes 20-21).
        try send(encode(header: bytes, data: Self.text(keys)))
        return try expectPDU()
    }

    /// Logs in: SecurityNegotiation (with CHAP when `chap` is given), LoginOperationalNegotiation, Full Feature
    /// Phase. Stops at the first Login Response with a non-zero status. `targetName` nil logs in for discovery.
    public func login(
        initiatorName: String, targetName: String?, chap: RawCHAP? = nil, authMethod: String? = nil,
        headerDigest: Bool = false, dataDigest: Bool = false
    ) throws -> RawLoginResult {
        var identity = [("InitiatorName", initiatorName)]
        if let targetName {
            identity += [("SessionType", "Normal"), ("TargetName", targetName)]
        } else {
            identity += [("SessionType", "Discovery")]
        }
        var keys: [(key: String, value: String)] = []
        var targetVerified: Bool?
        func answered(_ pdu: RawPDU) -> RawLoginResult? {
            keys += pdu.keys
            return pdu.loginStatus == (0, 0) ? nil : RawLoginResult(response: pdu, keys: keys, targetVerified: nil)
        }

        var securityDone = false
        if let chap {
            let first = try loginRequest(
                currentStage: 0, nextStage: 1, transit: false, keys: identity + [("AuthMethod", "CHAP")])
            if let failed = answered(first) { return failed }
            identity = []
            let challenge = try loginRequest(
                currentStage: 0, nextStage: 1, transit: false, keys: [("CHAP_A", String(chap.algorithm))])
            if let failed = answered(challenge) { return failed }
            guard let identifier = challenge.value("CHAP_I").flatMap(UInt8.init),
                let challengeBytes = challenge.value("CHAP_C").flatMap(Self.decodeHex)
            else { throw RawISCSIFailure("no CHAP_I/CHAP_C in \(challenge.keys)") }
            let response = try CHAPHash.response(
                algorithm: chap.algorithm, identifier: identifier, secret: chap.secret, challenge: challengeBytes)
            var answer = [("CHAP_N", chap.user), ("CHAP_R", Self.encodeHex(response))]
            let ourIdentifier = UInt8.random(in: 0...255)
            let ourChallenge = (0..<16).map { _ in UInt8.random(in: 0...255) }
            if chap.target != nil {
                answer += [("CHAP_I", String(ourIdentifier)), ("CHAP_C", Self.encodeHex(ourChallenge))]
            }
            let proved = try loginRequest(currentStage: 0, nextStage: 1, transit: true, keys: answer)
            if let failed = answered(proved) { return failed }
            if let target = chap.target {
                let expected = try CHAPHash.response(
                    algorithm: chap.algorithm, identifier: ourIdentifier, secret: target.secret,
                    challenge: ourChallenge)
                targetVerified =
                    proved.value("CHAP_N") == target.user
                    && proved.value("CHAP_R").flatMap(Self.decodeHex) == expected
                guard targetVerified == true else {
                    return RawLoginResult(response: proved, keys: keys, targetVerified: false)
                }
            }
            securityDone = proved.flags & 0x80 != 0
        } else if let authMethod {
            let first = try loginRequest(
                currentStage: 0, nextStage: 1, transit: true, keys: identity + [("AuthMethod", authMethod)])
            if let failed = answered(first) { return failed }
            identity = []
            securityDone = first.flags & 0x80 != 0
        }
        if chap != nil || authMethod != nil, !securityDone {
            throw RawISCSIFailure("the target did not leave SecurityNegotiation: \(keys)")
        }

        var operational =
            identity + [
                ("HeaderDigest", headerDigest ? "CRC32C" : "None"), ("DataDigest", dataDigest ? "CRC32C" : "None"),
                ("MaxRecvDataSegmentLength", "262144"), ("ErrorRecoveryLevel", "0"),
            ]
        if targetName != nil {
            operational += [("InitialR2T", "Yes"), ("ImmediateData", "Yes"), ("MaxBurstLength", "262144")]
        }
        var final = try loginRequest(currentStage: 1, nextStage: 3, transit: true, keys: operational)
        while true {
            if let failed = answered(final) { return failed }
            if final.flags & 0x83 == 0x83 { break }
            final = try loginRequest(currentStage: 1, nextStage: 3, transit: true, keys: [])
        }
        tsih = UInt16(final.header[14]) << 8 | UInt16(final.header[15])
        cmdSN = final.expCmdSN
        let result = RawLoginResult(response: final, keys: keys, targetVerified: targetVerified)
        self.headerDigest = result.value("HeaderDigest") == "CRC32C"
        self.dataDigest = result.value("DataDigest") == "CRC32C"
        if let length = result.value("MaxRecvDataSegmentLength").flatMap(Int.init) {
            targetMaxRecvDataSegmentLength = length
        }
        return result
    }

    // MARK: Full Feature Phase

    /// NOP-Out as a ping (RFC 7143 §11.18): immediate, TTT 0xffffffff, answered by a NOP-In with the same ITT.
    public func ping(data: [UInt8] = []) throws -> RawPDU {
        let tag = nextTaskTag()
        var bytes = header(opcode: RawOpcode.nopOut, immediate: true, flags: 0x80, initiatorTaskTag: tag)
        Self.put(0xffff_ffff, into: &bytes, at: 20)
        try send(encode(header: bytes, data: data))
        let answer = try expectPDU()
        guard answer.opcode == RawOpcode.nopIn, answer.initiatorTaskTag == tag else {
            throw RawISCSIFailure("NOP-Out answered with opcode 0x\(String(answer.opcode, radix: 16))")
        }
        return answer
    }

    /// TEST UNIT READY to LUN 0; returns the SCSI status.
    public func testUnitReady() throws -> UInt8 {
        let tag = nextTaskTag()
        var bytes = header(opcode: RawOpcode.scsiCommand, flags: 0x80, initiatorTaskTag: tag)
        cmdSN &+= 1
        // CDB at bytes 32-47: TEST UNIT READY is all zeros.
        bytes[32] = 0x00
        try send(encode(header: bytes))
        let answer = try expectPDU()
        guard answer.opcode == RawOpcode.scsiResponse, answer.initiatorTaskTag == tag else {
            throw RawISCSIFailure("TEST UNIT READY answered with opcode 0x\(String(answer.opcode, radix: 16))")
        }
        return answer.header[3]
    }

    /// `SendTargets=<value>` in a Text Request; returns every pair of the (possibly continued) Text Response.
    public func sendTargets(_ value: String = "All") throws -> [(key: String, value: String)] {
        let tag = nextTaskTag()
        var data = Self.text([("SendTargets", value)])
        var targetTransferTag: UInt32 = 0xffff_ffff
        var collected: [UInt8] = []
        while true {
            var bytes = header(opcode: RawOpcode.textRequest, immediate: true, flags: 0x80, initiatorTaskTag: tag)
            Self.put(targetTransferTag, into: &bytes, at: 20)
            try send(encode(header: bytes, data: data))
            let answer = try expectPDU()
            guard answer.opcode == RawOpcode.textResponse else {
                throw RawISCSIFailure("SendTargets answered with opcode 0x\(String(answer.opcode, radix: 16))")
            }
            collected += answer.data
            guard answer.flags & 0x40 != 0 else { break }
            targetTransferTag = RawPDU.uint32(answer.header, at: 20)
            data = []
        }
        return RawPDU.textKeys(collected)
    }

    // MARK: Binary values

    public static func encodeHex(_ bytes: [UInt8]) -> String {
        "0x" + bytes.map { String(format: "%02x", $0) }.joined()
    }

    public static func decodeHex(_ text: String) -> [UInt8]? {
        guard text.hasPrefix("0x") || text.hasPrefix("0X") else { return nil }
        var digits = Array(text.utf8.dropFirst(2))
        if digits.count % 2 == 1 { digits.insert(UInt8(ascii: "0"), at: 0) }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16) else {
                return nil
            }
            bytes.append(byte)
        }
        return bytes
    }
}

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the iSCSI digest (RFC 7143 §13.1), written out here so
/// that the tests do not lean on Ferry's ISA-L binding.
public enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    /// The digest as the 32-bit number the wire carries (big-endian on the wire, as RFC 7143 §11.1 puts all integers;
    /// the bytes are the little-endian CRC register, so the number is byte-swapped).
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xffff_ffff
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8) }
        return (~crc).byteSwapped
    }
}

/// The CHAP response (RFC 1994 §4.1: hash of identifier, secret and challenge), computed by the `openssl` command
/// rather than by the swift-crypto that Ferry itself uses.
public enum CHAPHash {
    public static func response(algorithm: UInt8, identifier: UInt8, secret: String, challenge: [UInt8]) throws -> [UInt8] {
        let digest: String
        switch algorithm {
        case 5: digest = "-md5"
        case 6: digest = "-sha1"
        case 7: digest = "-sha256"
        case 8: digest = "-sha3-256"
        default: throw RawISCSIFailure("CHAP_A=\(algorithm) is not one this client knows")
        }
        let process = Process()
        guard
            let openssl = ["/usr/bin/openssl", "/usr/local/bin/openssl"].first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else { throw RawISCSIFailure("openssl is not installed: install openssl (scripts/install-deps --test)") }
        process.executableURL = URL(fileURLWithPath: openssl)
        process.arguments = ["dgst", digest, "-binary"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(Data([identifier] + Array(secret.utf8) + challenge))
        try input.fileHandleForWriting.close()
        let result = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw RawISCSIFailure("openssl dgst \(digest) failed") }
        return Array(result)
    }
}
