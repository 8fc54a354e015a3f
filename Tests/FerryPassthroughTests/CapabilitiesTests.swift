import FerryPassthrough
import Testing

@Suite struct CapabilitiesTests {
    @Test func readsTheEffectiveSet() {
        let root = PassthroughCapabilities.parse(
            status: "Name:\tferryd\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n")
        #expect(root == PassthroughCapabilities(rawIO: true, admin: true))
        #expect(root?.missing == nil)
        // CAP_SYS_RAWIO (bit 17) only.
        let rawIO = PassthroughCapabilities.parse(status: "CapEff:\t0000000000020000\n")
        #expect(rawIO == PassthroughCapabilities(rawIO: true, admin: false))
        #expect(rawIO?.missing?.hasPrefix("CAP_SYS_ADMIN is missing") == true)
        let none = PassthroughCapabilities.parse(status: "CapEff:\t0000000000000000\n")
        #expect(none?.missing?.hasPrefix("CAP_SYS_RAWIO and CAP_SYS_ADMIN are missing") == true)
        #expect(PassthroughCapabilities.parse(status: "Name:\tx\n") == nil)
    }

    @Test func thisProcessHasAnAnswer() {
        #expect(PassthroughCapabilities.current() != nil)
    }
}
