/// Values by key, held in the slots of an array that a dictionary indexes: the session's tasks by Initiator Task
/// Tag, its transmit queues by CID.
///
/// A value changes in place through ``update(_:_:)``, which reaches its slot through `Array`'s addressor. `Dictionary`
/// has only a modify coroutine for that, whose frame holds the value: for a value the size of a
/// ``TaskStateMachine`` the frame is allocated on the heap, so each `dictionary[key]?.change()` cost a `malloc`, and a
/// 4 KiB READ about ten of them. A removed value's slot is reused, so that steady traffic allocates nothing.
public struct SlotTable<Key: Hashable, Value> {
    private var slotOfKey: [Key: Int] = [:]
    private var slots: [Value?] = []
    private var freeSlots: [Int] = []

    public init() {}

    public var count: Int { slotOfKey.count }
    public var isEmpty: Bool { slotOfKey.isEmpty }
    public var keys: Dictionary<Key, Int>.Keys { slotOfKey.keys }

    /// A copy of the value of `key`. Change it with ``update(_:_:)``.
    public subscript(key: Key) -> Value? {
        slotOfKey[key].flatMap { slots[$0] }
    }

    /// Runs `body` on the value of `key` in its slot; nil when there is none.
    @discardableResult
    public mutating func update<Result>(_ key: Key, _ body: (inout Value) throws -> Result) rethrows -> Result? {
        guard let slot = slotOfKey[key] else { return nil }
        return try body(&slots[slot]!)
    }

    /// Gives `key` the value `value`, in the slot it had or in a free one.
    public mutating func insert(_ value: Value, for key: Key) {
        if let slot = slotOfKey[key] {
            slots[slot] = value
        } else if let slot = freeSlots.popLast() {
            slots[slot] = value
            slotOfKey[key] = slot
        } else {
            slotOfKey[key] = slots.count
            slots.append(value)
        }
    }

    @discardableResult
    public mutating func removeValue(forKey key: Key) -> Value? {
        guard let slot = slotOfKey.removeValue(forKey: key) else { return nil }
        defer {
            slots[slot] = nil
            freeSlots.append(slot)
        }
        return slots[slot]
    }
}

extension SlotTable: Sequence {
    public struct Iterator: IteratorProtocol {
        fileprivate var keys: Dictionary<Key, Int>.Iterator
        fileprivate let slots: [Value?]

        public mutating func next() -> (key: Key, value: Value)? {
            while let (key, slot) = keys.next() {
                if let value = slots[slot] { return (key, value) }
            }
            return nil
        }
    }

    /// The pairs as they are when iteration begins; changes meanwhile do not show.
    public func makeIterator() -> Iterator {
        Iterator(keys: slotOfKey.makeIterator(), slots: slots)
    }
}
