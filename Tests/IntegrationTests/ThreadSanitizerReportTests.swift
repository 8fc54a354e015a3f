import Testing

/// How the tests find ThreadSanitizer reports in what ferryd and ferryctl print (``ThreadSanitizer``).
@Suite struct ThreadSanitizerReportTests {
    static let report = """
        2026-12-05T07:16:41+0000 info ferryd: [FerryTarget] logged in
        ==================
        WARNING: ThreadSanitizer: data race (pid=4242)
          Write of size 8 at 0x7b0400000820 by thread T3:
            #0 $s11FerryTarget15SessionRegistryC6remove <null>
        SUMMARY: ThreadSanitizer: data race SessionRegistry.swift:60:46
        ==================
        2026-12-05T07:16:42+0000 info ferryd: [FerryTarget] stopped
        ThreadSanitizer: reported 1 warnings
        """

    @Test func aReportFailsWithTheReport() {
        let message = ThreadSanitizer.reports(in: Self.report, of: "ferryd")
        #expect(message?.hasPrefix("ThreadSanitizer reported 1 warning(s) in ferryd:\nWARNING: ThreadSanitizer: data race") == true)
        #expect(message?.contains("SessionRegistry.swift:60:46") == true)
        #expect(throws: IntegrationFailure.self) { try ThreadSanitizer.check(Self.report, of: "ferryd") }
    }

    @Test func aCleanLogPasses() throws {
        let log = "2026-12-05T07:16:41+0000 info ferryd: [FerryTarget] logged in\n"
        #expect(ThreadSanitizer.reports(in: log, of: "ferryd") == nil)
        try ThreadSanitizer.check(log, of: "ferryd")
    }
}
