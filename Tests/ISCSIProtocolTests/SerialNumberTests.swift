import ISCSIProtocol
import Testing

@Suite struct SerialNumberTests {
    @Test func simpleOrdering() {
        let a: SerialNumber = 1
        let b: SerialNumber = 2
        #expect(a < b)
        #expect(b > a)
        #expect(!(a > b))
        #expect(a <= b && a <= a && b >= a && b >= b)
        #expect(!(a < a) && !(a > a))
    }

    @Test func wrapAround() {
        let last: SerialNumber = 0xffff_ffff
        let first: SerialNumber = 0
        #expect(last < first)
        #expect(first > last)
        #expect(last + 1 == first)
        #expect(last.distance(to: first) == 1)
        #expect(first.distance(to: last) == -1)
        #expect(SerialNumber(0xffff_fff0) + 0x20 == SerialNumber(0x10))
    }

    @Test func largestDefinedDistance() {
        let a: SerialNumber = 5
        let b = a + SerialNumber.maximumIncrement
        #expect(a < b)
        #expect(a.distance(to: b) == Int32.max)
        #expect(b.distance(to: a) == -Int32.max)
    }

    /// RFC 1982 §3.2: numbers 2^31 apart are neither less nor greater than each other.
    @Test func undefinedComparison() {
        for base: UInt32 in [0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff] {
            let a = SerialNumber(base)
            let b = SerialNumber(base &+ 0x8000_0000)
            #expect(!(a < b) && !(a > b) && !(b < a) && !(b > a))
            #expect(a != b)
            #expect(a.distance(to: b) == nil)
            #expect(b.distance(to: a) == nil)
        }
    }

    @Test func compoundAddition() {
        var sn: SerialNumber = 0xffff_fffe
        sn += 1
        #expect(sn.rawValue == 0xffff_ffff)
        sn += 1
        #expect(sn.rawValue == 0)
    }

    /// The command window of RFC 7143 §4.2.2.1, across the wrap.
    @Test func commandWindow() {
        let expCmdSN: SerialNumber = 0xffff_fffe
        let maxCmdSN: SerialNumber = 3
        #expect(SerialNumber(0xffff_fffe).isInWindow(from: expCmdSN, through: maxCmdSN))
        #expect(SerialNumber(0).isInWindow(from: expCmdSN, through: maxCmdSN))
        #expect(SerialNumber(3).isInWindow(from: expCmdSN, through: maxCmdSN))
        #expect(!SerialNumber(4).isInWindow(from: expCmdSN, through: maxCmdSN))
        #expect(!SerialNumber(0xffff_fffd).isInWindow(from: expCmdSN, through: maxCmdSN))
        // MaxCmdSN = ExpCmdSN - 1: the window is closed.
        #expect(!SerialNumber(10).isInWindow(from: 10, through: 9))
    }
}
