import NIOCore

/// The way out: each connection's transmit queue, and the actions handed to the shell.
extension SessionStateMachine {
    // MARK: Transmit

    /// A task's response is ready: it waits in its connection's transmit queue. When that connection is gone
    /// (ErrorRecoveryLevel 0: nobody is left to hear it, and no task is reassigned) the task ends here.
    mutating func respond(_ itt: UInt32) {
        guard let cid = tasks[itt]?.connection else { return }
        guard connections[cid] != nil else {
            if var task = tasks.removeValue(forKey: itt) { released += task.releaseReservation() }
            return
        }
        queue(.taskResponse(itt), on: cid)
    }

    mutating func queue(_ entry: TransmitQueue.Entry, on cid: UInt16) {
        guard connections.update(cid, { $0.append(entry) }) != nil else { return }
        drain(cid)
    }

    /// Builds and emits the PDUs of every transmittable entry, in order.
    /// The queue is changed in place (never copied out), so that its storage is not duplicated per PDU.
    mutating func drain(_ cid: UInt16) {
        while let entry = connections.update(cid, { $0.next() }) ?? nil {
            let window = window
            switch entry {
            case .message(let message):
                guard let pdu = connections.update(cid, { $0.build(message, window: window) }) else { return }
                actions.append(.send(pdu, connection: cid))
            case .readyToTransfer(let itt, let ttt):
                guard let (r2t, r2tSN) = tasks.update(itt, { $0.readyToTransfer(ttt) }) ?? nil, let lun = tasks[itt]?.lun,
                    let pdu = connections.update(cid, {
                        $0.readyToTransfer(r2t, r2tSN: r2tSN, lun: lun, initiatorTaskTag: itt, window: window)
                    })
                else { continue }
                actions.append(.send(pdu, connection: cid))
            case .taskResponse(let itt):
                guard var task = tasks.removeValue(forKey: itt) else { continue }
                guard case .completed(let outcome) = task.state else {
                    tasks.insert(task, for: itt)
                    continue
                }
                released += task.releaseReservation()
                refreshWindow()
                var emitted = actions
                actions = []
                let (window, parameters) = (self.window, self.parameters)
                connections.update(cid) {
                    $0.taskResponse(outcome, lun: task.lun, initiatorTaskTag: itt, window: window, parameters: parameters) {
                        emitted.append(.send($0, connection: cid))
                    }
                }
                actions = emitted
            }
        }
    }

    mutating func queueMessage(_ message: TransmitQueue.Message, on cid: UInt16) {
        queue(.message(message), on: cid)
    }

    // MARK: Actions

    mutating func release(_ reservation: DataBufferReservation) {
        if case .reserved(let bytes) = reservation, bytes > 0 { released += bytes }
    }

    mutating func append(_ action: Action) {
        actions.append(action)
    }

    /// Hands the actions of an event to the shell. The buffer moves out whole (no copy), and
    /// ``recycle(_:)`` brings its storage back, so that steady traffic allocates no action arrays.
    mutating func takeActions() -> [Action] {
        if released > 0 {
            actions.append(.releaseDataBuffer(released))
            released = 0
        }
        var taken: [Action] = []
        swap(&taken, &actions)
        return taken
    }

    /// Takes back an action buffer the shell has carried out, to reuse its storage for the next event.
    public mutating func recycle(_ buffer: consuming [Action]) {
        guard actions.isEmpty, buffer.capacity > actions.capacity else { return }
        var buffer = buffer
        buffer.removeAll(keepingCapacity: true)
        actions = buffer
    }
}
