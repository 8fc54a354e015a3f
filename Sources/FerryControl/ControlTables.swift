/// Plain-text tables for ferryctl: a header row, aligned columns, two spaces between them.
public struct ControlTable: Sendable, Hashable {
    public var headers: [String]
    public var rows: [[String]]

    public init(headers: [String], rows: [[String]]) {
        self.headers = headers
        self.rows = rows
    }

    /// The table, one line per row, ending in a newline; "(none)" under the header when empty.
    public func render() -> String {
        let all = [headers] + rows
        let widths = headers.indices.map { column in
            all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0
        }
        var text = ""
        for row in all {
            let cells = headers.indices.map { column -> String in
                let cell = row.indices.contains(column) ? row[column] : ""
                return column == headers.count - 1 ? cell : cell.padding(to: widths[column])
            }
            text += cells.joined(separator: "  ") + "\n"
        }
        if rows.isEmpty { text += "(none)\n" }
        return text
    }
}

extension String {
    fileprivate func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}

extension ControlTable {
    public init(targets: [TargetInfo]) {
        self.init(
            headers: ["TARGET", "LUNS", "SESSIONS", "AUTH", "ALLOWED INITIATORS"],
            rows: targets.map { target in
                let auth = target.mutualCHAP ? "mutual CHAP" : target.chap ? "CHAP" : "none"
                let allowed =
                    target.allowedInitiators.isEmpty ? "any" : target.allowedInitiators.joined(separator: ", ")
                return [target.name, "\(target.luns)", "\(target.sessions)", auth, allowed]
            })
    }

    public init(luns: [LUNInfo]) {
        self.init(
            headers: ["TARGET", "LUN", "BACKEND", "DEVICE", "STATE", "SIZE", "BLOCK", "MODE", "PATH"],
            rows: luns.map { lun in
                [
                    lun.target, "\(lun.lun)", lun.backend, lun.device, lun.state,
                    lun.sizeBytes.map(Self.byteCount) ?? "-", "\(lun.blockSize)", lun.readOnly ? "ro" : "rw",
                    lun.path.isEmpty ? "-" : lun.path,
                ]
            })
    }

    public init(sessions: [SessionInfo]) {
        self.init(
            headers: ["TSIH", "INITIATOR", "TARGET", "ISID", "CONNECTIONS", "CMDSN WINDOW", "TASKS", "PARAMETERS"],
            rows: sessions.map { session in
                let connections = session.connections.map { "\($0.cid)@\($0.address)" }.joined(separator: ", ")
                let keys = [
                    "MaxBurstLength", "FirstBurstLength", "ImmediateData", "InitialR2T", "MaxRecvDataSegmentLength",
                ]
                let parameters = keys.compactMap { key in session.parameters[key].map { "\(key)=\($0)" } }
                return [
                    "\(session.tsih)", session.initiator, session.type == "Discovery" ? "(discovery)" : session.target,
                    session.isid, connections, "\(session.expCmdSN)..\(session.maxCmdSN)", "\(session.tasks)",
                    parameters.joined(separator: " "),
                ]
            })
    }

    public init(taskManagement counts: [TaskManagementCount]) {
        self.init(
            headers: ["TARGET", "LUN", "FUNCTION", "RESPONSE", "COUNT"],
            rows: counts.map { [$0.target, "\($0.lun)", $0.function, $0.response, "\($0.count)"] })
    }

    /// `1 GiB`, `512 MiB`, `4096 B`: exact binary units when they divide, else bytes.
    static func byteCount(_ bytes: UInt64) -> String {
        for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] as [(String, UInt64)]
        where bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift) \(unit)"
        }
        return "\(bytes) B"
    }
}

extension ChangeSummary {
    /// One line per change and warning, for ferryctl.
    public var text: String {
        var lines = changes.isEmpty ? ["no changes"] : changes
        lines += warnings.map { "warning: \($0)" }
        if sessionsLoggedOut > 0 { lines.append("\(sessionsLoggedOut) session(s) asked to log out") }
        return lines.joined(separator: "\n") + "\n"
    }
}
