import FerrySync
import NIOCore

/// Every connection admitted into a session (``TargetContext/admit(_:channel:logger:)``), until it closes: what a
/// reload and a graceful shutdown wait on to learn that the sessions they asked to log out have ended, without
/// polling the session registry.
///
/// A session ends with its last connection: the connection's `channelInactive` hands the removal to the session's
/// loop before the channel's close future completes (NIO runs the close callouts first). So once a connection's
/// close future has completed and the session's loop has run what was queued before it, the session has carried
/// out the close, and has ended if that was its last connection.
final class AdmittedConnections: Sendable {
    private struct Connection {
        var channel: any Channel
        var node: TargetNode
        var sessionLoop: any EventLoop
    }

    private let open = Locked<[ObjectIdentifier: Connection]>([:])

    /// `channel` joined a session of `node` that lives on `sessionLoop`.
    func admitted(_ channel: any Channel, node: TargetNode, sessionLoop: any EventLoop) {
        let id = ObjectIdentifier(channel)
        let added = open.withLock { open in
            guard open[id] == nil else { return false }
            open[id] = Connection(channel: channel, node: node, sessionLoop: sessionLoop)
            return true
        }
        guard added else { return }
        channel.closeFuture.whenComplete { [open] _ in _ = open.withLock { $0.removeValue(forKey: id) } }
    }

    /// The connections open now, of the sessions of `nodes` (nil: of every node).
    func count(of nodes: [TargetNode]? = nil) -> Int {
        open.withLock { open in open.values.filter { Self.belongs($0, to: nodes) }.count }
    }

    /// Calls `body` once, on any thread, when every connection open now (of the sessions of `nodes`; nil: of every
    /// node) has closed and its session has carried out the close; at once when there is none. A connection admitted
    /// later is not waited for.
    func whenClosed(of nodes: [TargetNode]? = nil, _ body: @escaping @Sendable () -> Void) {
        let connections = open.withLock { open in open.values.filter { Self.belongs($0, to: nodes) } }
        guard !connections.isEmpty else { return body() }
        let remaining = Locked(connections.count)
        let closed: @Sendable () -> Void = {
            if remaining.withLock({ $0 -= 1; return $0 == 0 }) { body() }
        }
        for connection in connections {
            let sessionLoop = connection.sessionLoop
            connection.channel.closeFuture.whenComplete { _ in
                // On the session's own loop the removal ran inside channelInactive; on another loop it is queued
                // there, ahead of this.
                if sessionLoop.inEventLoop { closed() } else { sessionLoop.execute(closed) }
            }
        }
    }

    private static func belongs(_ connection: Connection, to nodes: [TargetNode]?) -> Bool {
        nodes.map { nodes in nodes.contains { $0 === connection.node } } ?? true
    }
}
