import ArgumentParser
import FerryControl

extension Ferryctl {
    /// What Ferry's udev rules run when a disk chosen for export appears or goes away
    /// (udev/60-ferry.rules); an administrator can run it too, e.g. after plugging a disk
    /// without the rules installed.
    struct Device: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Tell ferryd that a SCSI disk appeared or went away (run by Ferry's udev rules).",
            discussion: """
                removed: the passthrough LUNs on that disk go offline (NOT READY to initiators). \
                added: offline LUNs whose path names their disk again (the same WWN) are opened in the \
                background and come back with a unit attention. Without NAME every passthrough LUN is checked.
                """)
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "added or removed.") var action: Action
        @Argument(help: "The kernel name or node of the disk (sg3, /dev/sg3, sdc); udev passes %k.") var name: String?

        /// udev kills a RUN program that takes long, and holds the device's events meanwhile.
        static let timeoutSeconds = 10

        func run() throws {
            let request = ControlRequest.device(DeviceEvent(action: action.event, name: name))
            let response = try ControlClient(path: options.socket, timeout: Self.timeoutSeconds).exchange(request)
            if let error = response.error { throw CommandFailure(error.description) }
            try options.show(response) { response.changes?.text ?? "" }
        }
    }
}

extension Ferryctl.Device {
    enum Action: String, ExpressibleByArgument, CaseIterable {
        case added, removed

        var event: DeviceEvent.Action {
            switch self {
            case .added: .added
            case .removed: .removed
            }
        }
    }
}
