import FerryConfig
import FerryControl
import FerryTarget
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Answers ferryctl's requests (``ControlRequest``) from the running target.
struct ControlResponder: Sendable {
    let target: ISCSITarget
    let reloader: Reloader
    let logger: Logger

    /// One line in, one line out; a line that is not a request is answered with an error.
    func respond(to line: String) async -> String {
        let response: ControlResponse
        do throws(ControlFailure) {
            let request = try ControlCodec.decode(ControlRequest.self, from: Data(line.utf8))
            logger.info("control request", metadata: ["command": "\(request.command.rawValue)"])
            response = await answer(request)
        } catch {
            response = ControlResponse(error: error)
        }
        let data = (try? ControlCodec.line(response)) ?? Data(#"{"error":{"message":"cannot encode the answer"}}"#.utf8)
        return String(decoding: data.dropLast(), as: UTF8.self)
    }

    private func answer(_ request: ControlRequest) async -> ControlResponse {
        switch request {
        case .targets:
            return ControlResponse(targets: await targets())
        case .luns(let name):
            let configuration = target.configuration
            if let name, !configuration.targets.contains(where: { $0.name == name }) {
                return .failure("no target \(name)", hint: "ferryctl targets lists them")
            }
            // Without the udev rules, or when an event was missed, a passthrough LUN whose disk is gone from sysfs is
            // still online: it is taken offline first, so that the state shown is the truth (docs/udev.md).
            _ = target.deviceRemoved(name: nil)
            return ControlResponse(luns: luns(of: configuration.targets.filter { name == nil || $0.name == name }))
        case .sessions:
            return ControlResponse(sessions: await target.sessions().map(Self.info))
        case .taskManagement:
            return ControlResponse(
                taskManagement: target.taskManagementCounts().map {
                    TaskManagementCount(
                        target: $0.target, lun: $0.lun, function: $0.function, response: $0.response, count: $0.count)
                })
        case .reload:
            switch await reloader.reload() {
            case .success(let report): return ControlResponse(changes: Self.summary(report))
            case .failure(let failure):
                return .failure(
                    "reload refused; still serving the previous configuration:\n"
                        + failure.problems.joined(separator: "\n"),
                    hint: "fix \(reloader.source.name) (ferryctl check-config FILE shows every problem), then reload")
            }
        case .saveConfig:
            switch await reloader.save() {
            case .success(let file):
                return ControlResponse(
                    changes: ChangeSummary(changes: ["saved the running configuration to \(file)"]))
            case .failure(let failure):
                return .failure(
                    "save-config refused: " + failure.problems.joined(separator: "\n"),
                    hint: reloader.source.file == nil
                        ? "start ferryd with --config FILE to save runtime changes" : "the file was left as it was")
            }
        case .logout(let tsih):
            guard target.logOut(tsih: tsih) else {
                return .failure("no session with TSIH \(tsih)", hint: "ferryctl sessions lists them")
            }
            return ControlResponse(changes: ChangeSummary(changes: ["asked session \(tsih) to log out"]))
        case .addLUN(let name, let definition):
            let lun = LogicalUnit(
                lun: definition.lun, path: definition.path, size: definition.size,
                blockSize: definition.blockSize ?? 512, readOnly: definition.readOnly ?? false)
            return await change { try $0.addingLogicalUnit(lun, to: name) }
        case .removeLUN(let name, let lun):
            return await change { try $0.removingLogicalUnit(lun, from: name) }
        case .addInitiator(let name, let initiator):
            return await change { try $0.addingAllowedInitiator(initiator, to: name) }
        case .removeInitiator(let name, let initiator):
            return await change { try $0.removingAllowedInitiator(initiator, from: name) }
        case .device(let event):
            return Self.answer(event, target: target)
        }
    }

    private func change(
        _ body: @escaping @Sendable (FerryConfiguration) throws -> FerryConfiguration
    ) async -> ControlResponse {
        switch await reloader.apply(body) {
        case .success(let report):
            var summary = Self.summary(report)
            summary.warnings.append(
                reloader.source.file.map { "runtime changes are not saved: ferryctl save-config writes them to \($0)" }
                    ?? "runtime changes are not saved: ferryd serves the embedded default (no --config FILE)")
            return ControlResponse(changes: summary)
        case .failure(let failure):
            return .failure(failure.problems.joined(separator: "\n"), hint: "nothing was changed")
        }
    }

    private func targets() async -> [TargetInfo] {
        let sessions = await target.sessions()
        return target.configuration.targets.map { configured in
            TargetInfo(
                name: configured.name, alias: configured.alias, luns: configured.luns.count,
                allowedInitiators: configured.allowedInitiators, chap: configured.chap != nil,
                mutualCHAP: configured.mutualCHAP != nil,
                sessions: sessions.filter { $0.targetName == configured.name }.count)
        }
    }

    private func luns(of targets: [Target]) -> [LUNInfo] {
        targets.flatMap { configured in
            let states = target.logicalUnitStates(target: configured.name)
            let geometry = target.passthroughGeometry(target: configured.name)
            return configured.luns.map { lun in
                let size: UInt64? =
                    switch lun.backend {
                    case .sg: geometry[lun.lun]?.bytes
                    case .emulated: Self.byteCount(of: lun.path) ?? lun.size
                    // No file behind it: the configured capacity.
                    case .null: lun.size
                    // The image's size is the cluster's to say: not asked for on every listing.
                    case .rbd: nil
                    }
                return LUNInfo(
                    target: configured.name, lun: lun.lun, backend: lun.backend.rawValue,
                    device: states[lun.lun]?.kind ?? "-", path: lun.path, sizeBytes: size,
                    blockSize: geometry[lun.lun]?.blockSize ?? lun.blockSize, readOnly: lun.readOnly,
                    state: states[lun.lun]?.online == true ? "online" : "offline")
            }
        }
    }

    /// The size of a regular file, or of a block device (`BLKGETSIZE64`: its st_size is 0); nil when it is missing.
    private static func byteCount(of path: String) -> UInt64? {
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        guard status.st_mode & S_IFMT == S_IFBLK else { return UInt64(status.st_size) }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: UInt64 = 0
        return ioctl(descriptor, blockDeviceSizeRequest, &bytes) == 0 ? bytes : nil
    }

    /// `BLKGETSIZE64` from <linux/fs.h>: `_IOR(0x12, 114, size_t)`.
    private static let blockDeviceSizeRequest: UInt = 0x8008_1272

    /// A udev event (`ferryctl device added|removed NAME`): answered at once, so that udev's RUN
    /// never waits for a disk to be probed; a returning disk is opened in the background.
    private static func answer(_ event: DeviceEvent, target: ISCSITarget) -> ControlResponse {
        let name = event.name.map { ($0 as NSString).lastPathComponent }
        switch event.action {
        case .removed:
            return ControlResponse(changes: ChangeSummary(changes: target.deviceRemoved(name: name)))
        case .added:
            let count = target.deviceAdded(name: name)
            let changes = count == 0 ? [] : ["checking \(count) offline LUN(s) for their disk; ferryctl luns shows the state"]
            return ControlResponse(changes: ChangeSummary(changes: changes))
        }
    }

    private static func info(_ session: SessionSnapshot) -> SessionInfo {
        SessionInfo(
            tsih: session.tsih, isid: session.isid, initiator: session.initiatorName,
            target: session.discovery ? "" : session.targetName, type: session.discovery ? "Discovery" : "Normal",
            connections: session.connections.map { SessionInfo.Connection(cid: $0.cid, address: $0.address) },
            parameters: session.parameters, expCmdSN: session.expCmdSN, maxCmdSN: session.maxCmdSN,
            tasks: session.tasks)
    }

    private static func summary(_ report: ReloadReport) -> ChangeSummary {
        ChangeSummary(changes: report.changes, warnings: report.warnings, sessionsLoggedOut: report.sessionsLoggedOut)
    }
}
