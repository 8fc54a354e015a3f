import FerryBackends
import FerryConfig
@testable import FerryTarget
import Testing

/// The LUN map a session routes commands by: an immutable value, replaced whole on every change, which a session
/// keeps and refreshes per command without the node's lock unless the map changed.
@Suite struct TargetNodeLUNMapTests {
    static func node(_ units: [UInt64: any LogicalUnitBackend]) -> TargetNode {
        TargetNode(
            configuration: Target(name: "iqn.2026-11.dev.ferry:node", luns: []), portalGroupTag: 1,
            logicalUnits: units)
    }

    @Test func aMapOnceReadStaysAsItWasAndRefreshBringsTheNextOne() {
        let first = StubBackend()
        let second = StubBackend()
        let node = Self.node([0: first])
        var map = node.lunMap
        let before = map
        #expect(map.backend(lun: 0) === first)

        #expect(node.replace(lun: 0, expected: first, with: second))
        // The copy the session holds did not change under it.
        #expect(map.backend(lun: 0) === first)
        node.refresh(&map)
        #expect(map.backend(lun: 0) === second)
        #expect(map.generation == before.generation + 1)
        #expect(before.backend(lun: 0) === first)
        #expect(node.backend(lun: 0) === second)
    }

    @Test func refreshKeepsACurrentMapAndOnlyChangesBumpTheGeneration() {
        let unit = StubBackend()
        let node = Self.node([0: unit])
        var map = node.lunMap
        let generation = map.generation
        node.refresh(&map)
        #expect(map.generation == generation)
        // A replacement that does not find the expected backend changes nothing.
        #expect(!node.replace(lun: 0, expected: StubBackend(), with: StubBackend()))
        #expect(node.lunMap.generation == generation)
        node.update(configuration: Target(name: "iqn.2026-11.dev.ferry:node", luns: []), logicalUnits: [0: unit, 1: StubBackend()])
        #expect(node.lunMap.generation == generation + 1)
        node.refresh(&map)
        #expect(map.logicalUnits.keys.sorted() == [0, 1])
        #expect(node.lunNumbers == [0, 1])
    }

    /// SAM-5 single-level addressing: peripheral (00b) and flat (01b) LUN fields name the same logical unit.
    @Test func theMapTakesLUNFieldsInEitherAddressingMethod() {
        let unit = StubBackend()
        let map = Self.node([5: unit]).lunMap
        #expect(map.backend(lun: 0x0005_0000_0000_0000) === unit)
        #expect(map.backend(lun: 0x4005_0000_0000_0000) === unit)
        #expect(map.backend(lun: 0x0006_0000_0000_0000) == nil)
        #expect(map.backend(lun: 0xc005_0000_0000_0000) == nil, "extended addressing names no logical unit here")
    }

    /// Readers on other threads see either the map before a change or the one after, never a mix, and a refresh
    /// after the change always sees it.
    @Test func concurrentReadersSeeWholeMaps() async {
        let a = StubBackend()
        let b = StubBackend()
        let node = Self.node([0: a, 1: a])
        await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var map = node.lunMap
                    for _ in 0..<10_000 {
                        node.refresh(&map)
                        if map.backend(lun: 0) !== map.backend(lun: 1) { return false }
                    }
                    return true
                }
            }
            group.addTask {
                let target = Target(name: "iqn.2026-11.dev.ferry:node", luns: [])
                for round in 0..<1_000 {
                    let unit = round.isMultiple(of: 2) ? b : a
                    node.update(configuration: target, logicalUnits: [0: unit, 1: unit])
                }
                return true
            }
            for await whole in group { #expect(whole) }
        }
        var map = TargetNode.LUNMap(generation: .max, logicalUnits: [:])
        node.refresh(&map)
        #expect(map.backend(lun: 0) === a && map.generation == 1_000)
    }
}
