import FerryControl
import Testing

@Test func defaultSocketLivesUnderRun() {
    #expect(defaultControlSocketPath.hasPrefix("/run/"))
}
