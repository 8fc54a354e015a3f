import Testing

@testable import ISCSIProtocol

@Suite struct SendTargetsTests {
    @Test func aConfiguredHostIsReportedAsIs() {
        #expect(
            SendTargetsEntry.targetAddress(host: "192.0.2.1", port: 3260, portalGroupTag: 1, localAddress: "10.0.0.9")
                == "192.0.2.1:3260,1")
        #expect(
            SendTargetsEntry.targetAddress(host: "2001:db8::1", port: 3261, portalGroupTag: 2, localAddress: nil)
                == "[2001:db8::1]:3261,2")
    }

    @Test func aWildcardPortalIsReportedAsTheAddressTheConnectionArrivedOn() {
        #expect(
            SendTargetsEntry.targetAddress(host: "0.0.0.0", port: 3260, portalGroupTag: 1, localAddress: "192.0.2.7")
                == "192.0.2.7:3260,1")
        #expect(
            SendTargetsEntry.targetAddress(host: "::", port: 3260, portalGroupTag: 1, localAddress: "2001:db8::7")
                == "[2001:db8::7]:3260,1")
        // A dual-stack [::] listener sees IPv4 initiators as IPv4-mapped addresses.
        #expect(
            SendTargetsEntry.targetAddress(
                host: "::", port: 3260, portalGroupTag: 1, localAddress: "::ffff:127.0.0.1") == "127.0.0.1:3260,1")
        #expect(
            SendTargetsEntry.targetAddress(
                host: "0:0:0:0:0:0:0:0", port: 3260, portalGroupTag: 1, localAddress: "::1") == "[::1]:3260,1")
    }

    @Test func onlyTheUnspecifiedAddressesAreWildcards() {
        #expect(SendTargetsEntry.isWildcard("0.0.0.0"))
        #expect(SendTargetsEntry.isWildcard("::"))
        #expect(!SendTargetsEntry.isWildcard("::1"))
        #expect(!SendTargetsEntry.isWildcard("127.0.0.1"))
        #expect(!SendTargetsEntry.isWildcard("target.example"))
    }
}
