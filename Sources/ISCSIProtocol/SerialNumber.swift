/// A 32-bit serial number with the arithmetic of RFC 1982, as used by CmdSN, StatSN, DataSN and R2TSN.
///
/// RFC 7143 §4.2.2.1:
/// > (...) sequence numbers (...) are 32-bit unsigned integers (...). Arithmetic and comparison are done
/// > according to serial number arithmetic [RFC1982], where SERIAL_BITS = 32.
///
/// RFC 1982 leaves the comparison undefined when two numbers are exactly 2^31 apart: then neither `<` nor `>`
/// holds, and ``distance(to:)`` returns `nil`. For that reason this type is deliberately not `Comparable`.
public struct SerialNumber: RawRepresentable, Sendable, Hashable, CustomStringConvertible,
    ExpressibleByIntegerLiteral
{
    public var rawValue: UInt32

    /// The largest value that may be added to a serial number (RFC 1982 §3.1: 2^(SERIAL_BITS - 1) - 1).
    public static let maximumIncrement: UInt32 = 0x7fff_ffff

    @inlinable
    public init(rawValue: UInt32) {
        self.rawValue = rawValue
    }

    @inlinable
    public init(_ rawValue: UInt32) {
        self.rawValue = rawValue
    }

    @inlinable
    public init(integerLiteral value: UInt32) {
        self.rawValue = value
    }

    public var description: String { String(self.rawValue) }

    /// RFC 1982 §3.1 addition.
    ///
    /// > Serial numbers may be incremented by the addition of a positive integer n, where n is taken from the range
    /// > of integers [0 .. (2^(SERIAL_BITS - 1) - 1)].
    @inlinable
    public static func + (lhs: SerialNumber, rhs: UInt32) -> SerialNumber {
        precondition(rhs <= maximumIncrement, "RFC 1982 addition is only defined for n < 2^31")
        return SerialNumber(lhs.rawValue &+ rhs)
    }

    @inlinable
    public static func += (lhs: inout SerialNumber, rhs: UInt32) {
        lhs = lhs + rhs
    }

    /// RFC 1982 §3.2 comparison.
    ///
    /// > s1 is said to be less than s2 if, and only if, s1 is not equal to s2, and
    /// > (i1 < i2 and i2 - i1 < 2^(SERIAL_BITS - 1)) or (i1 > i2 and i1 - i2 > 2^(SERIAL_BITS - 1))
    ///
    /// `false` when the comparison is undefined (the numbers are 2^31 apart).
    @inlinable
    public static func < (lhs: SerialNumber, rhs: SerialNumber) -> Bool {
        let difference = rhs.rawValue &- lhs.rawValue
        return difference != 0 && difference < 0x8000_0000
    }

    /// RFC 1982 §3.2 "greater than"; `false` when the comparison is undefined.
    @inlinable
    public static func > (lhs: SerialNumber, rhs: SerialNumber) -> Bool {
        rhs < lhs
    }

    /// `lhs < rhs || lhs == rhs`.
    @inlinable
    public static func <= (lhs: SerialNumber, rhs: SerialNumber) -> Bool {
        lhs == rhs || lhs < rhs
    }

    /// `lhs > rhs || lhs == rhs`.
    @inlinable
    public static func >= (lhs: SerialNumber, rhs: SerialNumber) -> Bool {
        lhs == rhs || lhs > rhs
    }

    /// The signed number of steps from `self` to `other`: positive when `other` is greater, negative when it is
    /// smaller, and `nil` when RFC 1982 leaves the comparison undefined (the numbers are exactly 2^31 apart).
    @inlinable
    public func distance(to other: SerialNumber) -> Int32? {
        let difference = other.rawValue &- self.rawValue
        guard difference != 0x8000_0000 else { return nil }
        return Int32(bitPattern: difference)
    }

    /// Whether `self` lies in the closed window `[lower, upper]`, in serial number arithmetic. Used for the
    /// command window check of RFC 7143 §4.2.2.1 (ExpCmdSN <= CmdSN <= MaxCmdSN).
    @inlinable
    public func isInWindow(from lower: SerialNumber, through upper: SerialNumber) -> Bool {
        lower <= self && self <= upper
    }
}
