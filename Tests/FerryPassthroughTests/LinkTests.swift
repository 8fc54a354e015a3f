import FerryPassthrough
import Testing

@Test func linksLibSGUtils() {
    #expect(sgUtilsVersion.isEmpty == false)
}
