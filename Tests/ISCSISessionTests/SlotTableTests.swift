import ISCSISession
import Testing

@Suite struct SlotTableTests {
    @Test func valuesChangeInPlaceAndMissingKeysSaySo() {
        var table = SlotTable<UInt32, [Int]>()
        table.insert([1], for: 7)
        #expect(table.update(7) { $0.append(2); return $0.count } == 2)
        #expect(table[7] == [1, 2])
        #expect(table.update(8) { $0.append(3) } == nil)
        #expect(table[8] == nil)
        table.insert([9], for: 7)
        #expect(table[7] == [9])
        #expect(table.count == 1)
    }

    @Test func removedSlotsAreReusedAndIterationSeesEveryPair() {
        var table = SlotTable<UInt32, String>()
        for key in UInt32(0)..<4 { table.insert("v\(key)", for: key) }
        #expect(table.removeValue(forKey: 1) == "v1")
        #expect(table.removeValue(forKey: 1) == nil)
        table.insert("w", for: 10)
        #expect(table.count == 4)
        #expect(Dictionary(uniqueKeysWithValues: table.map { ($0.key, $0.value) }) == [0: "v0", 2: "v2", 3: "v3", 10: "w"])
        #expect(Set(table.keys) == [0, 2, 3, 10])
        // Iteration goes over the pairs as they were when it began.
        var seen = 0
        for (key, _) in table {
            table.removeValue(forKey: key)
            seen += 1
        }
        #expect(seen == 4)
        #expect(table.isEmpty)
    }
}
