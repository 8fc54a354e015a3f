import ArgumentParser
import FerryControl

@main
struct Ferryctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferryctl", abstract: "Administer a running ferryd.")

    @Option(help: "The control socket of ferryd.")
    var socket: String = defaultControlSocketPath

    func run() throws {
        throw ValidationError("no command yet; ferryd's control socket is \(socket)")
    }
}
