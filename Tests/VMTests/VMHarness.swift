import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// An error that says what went wrong and what to do about it; swift-testing prints it as is.
struct VMFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// What one guest run left behind, read from the writable results share.
struct GuestRun {
    /// The guest script's exit status; nil when the guest never reported one (it hung past the
    /// harness's hard timeout, or the VM died during boot).
    var exitCode: Int32?
    /// Everything the guest script printed (stdout and stderr).
    var output: String
    /// The guest kernel's log, saved after the script ended.
    var dmesg: String
    /// The serial console: the kernel's warnings and the initramfs's messages.
    var console: String
    /// Whether the harness had to kill qemu.
    var timedOut: Bool
    /// From starting qemu to its exit, boot and power-off included.
    var duration: Duration
    /// How long the guest script itself ran, as the guest measured it.
    var scriptDuration: Duration?
    /// The results share: the outputs above, plus whatever the script wrote to `$FERRY_RESULTS`.
    var directory: URL

    /// A file the guest script wrote to `$FERRY_RESULTS`, or "" when there is none.
    func file(_ name: String) -> String {
        String(decoding: (try? Data(contentsOf: directory.appendingPathComponent(name))) ?? Data(), as: UTF8.self)
    }

    /// Everything needed to debug a failed run, with the directory that keeps it all.
    var diagnostics: String {
        let exit = exitCode.map { "exit status \($0)" } ?? (timedOut ? "killed at the hard timeout" : "no exit status")
        return """
            guest run: \(exit) after \(VirtualMachine.seconds(duration)); all files kept in \(directory.path)
            --- guest output (last 12000 characters) ---
            \(output.suffix(12000))
            --- dmesg (last 6000 characters) ---
            \(dmesg.suffix(6000))
            --- console (last 3000 characters) ---
            \(console.suffix(3000))
            """
    }
}

/// The test bed: boots Debian's kernel (the one whose modules have scsi_debug) under
/// `qemu-system-x86_64 -accel tcg` on a busybox initramfs. The guest's root is the host's `/`,
/// shared read-only over virtio-9p under a tmpfs overlay, so that every host binary (ferryd,
/// iscsiadm, iscsi-test-cu, sg3-utils) runs in the guest unchanged. A second, writable 9p share
/// carries the script in and the results out. docs/testing.md explains the whole.
enum VirtualMachine {
    /// The directory of the guest-side scripts (`Tests/VMTests/guest`).
    static let guestDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("guest")

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// What CI installs (scripts/install-deps --test); named in every "missing" failure.
    static let packages =
        "qemu-system-x86 linux-image-amd64 busybox-static cpio kmod open-iscsi sg3-utils e2fsprogs libiscsi-bin"

    /// The modules the initramfs loads, with their dependencies, to reach the 9p root.
    static let initramfsModules = ["virtio_pci", "9pnet_virtio", "9p", "overlay"]

    /// The guest's PID 1 once the root is mounted.
    enum Init {
        /// `guest/init.sh`: bash prepares the guest and runs the script itself; no service manager.
        case shell
        /// systemd (`guest/systemd-init.sh`), with udevd and journald; the script runs as
        /// `ferry-vm-job.service` once `basic.target` is reached, and may use `systemctl` and `journalctl`.
        case systemd
    }

    /// Boots a VM that runs `guest/<script>` with `arguments` and `environment` (as bash, in /tmp,
    /// as root), and returns when the guest has powered off or `timeout` has passed; then qemu is
    /// killed. The script sees `$FERRY_RESULTS` (a writable directory shared with the host),
    /// `$FERRY_GUEST` (the guest scripts) and `$FERRYD` (a copy on the results share) when
    /// `environment` names one. The script is
    /// stopped inside the guest 25 s before `timeout`, so that dmesg is still saved.
    ///
    /// `forwardedPorts` maps host loopback ports to guest ports through qemu's user-mode network
    /// (the guest is 10.0.2.15 and reaches the host's loopback as 10.0.2.2); without it the
    /// guest has no network interface but its own loopback. `files` are copied to the results share,
    /// where the script finds each as `$FERRY_RESULTS/<name>`. `init: .systemd` boots with systemd
    /// as PID 1.
    static func run(
        script: String, arguments: [String] = [], environment: [String: String] = [:],
        timeout: Duration, memoryMegabytes: Int = 1024, forwardedPorts: [(host: Int, guest: Int)]? = nil,
        files: [URL] = [], init guestInit: Init = .shell
    ) async throws -> GuestRun {
        let qemu = try locate("qemu-system-x86_64", package: "qemu-system-x86")
        let kernel = try Kernel.find()
        let initramfs = try buildInitramfs(for: kernel)
        guard FileManager.default.fileExists(atPath: guestDirectory.appendingPathComponent(script).path) else {
            throw VMFailure("no guest script \(script) in \(guestDirectory.path)")
        }

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "ferry-vm-\(script.prefix { $0 != "." })-\(UUID().uuidString.prefix(8))")
        let results = directory.appendingPathComponent("results")
        try FileManager.default.createDirectory(at: results, withIntermediateDirectories: true)
        // Copies, not the originals: bash reads a script lazily, and an edit during a run would
        // change what the guest executes.
        try FileManager.default.copyItem(at: guestDirectory, to: results.appendingPathComponent("guest"))
        let guestSeconds = max(10, Int(timeout.components.seconds) - 25)
        try "\(guestSeconds)\n".write(to: results.appendingPathComponent("guest-timeout"), atomically: true, encoding: .utf8)
        var exports = environment
        exports["FERRY_RESULTS"] = "/ferry-results"
        exports["FERRY_GUEST"] = "/ferry-results/guest"
        // The guest sees the host's / but mounts its own tmpfs on /tmp, where a checkout (CI's
        // clone, say) may live; and a ferryd rebuilt during the run must not change under the
        // guest. So the guest runs a copy on the results share.
        if let ferryd = environment["FERRYD"] {
            try FileManager.default.copyItem(
                at: URL(fileURLWithPath: ferryd), to: results.appendingPathComponent("ferryd"))
            exports["FERRYD"] = "/ferry-results/ferryd"
        }
        for file in files {
            try FileManager.default.copyItem(at: file, to: results.appendingPathComponent(file.lastPathComponent))
        }
        let job =
            exports.sorted { $0.key < $1.key }.map { "export \($0.key)=\(shellQuoted($0.value))\n" }.joined()
            + "cd /tmp\nexec bash /ferry-results/guest/\(shellQuoted(script))"
            + arguments.map { " " + shellQuoted($0) }.joined() + "\n"
        try job.write(to: results.appendingPathComponent("job.sh"), atomically: true, encoding: .utf8)

        let consoleFile = directory.appendingPathComponent("console.log")
        let qemuLog = directory.appendingPathComponent("qemu.log")
        _ = FileManager.default.createFile(atPath: qemuLog.path, contents: nil)
        let network: [String]
        if let forwardedPorts {
            let forwards = forwardedPorts.map { ",hostfwd=tcp:127.0.0.1:\($0.host)-:\($0.guest)" }.joined()
            network = ["-nic", "user,model=virtio-net-pci\(forwards)"]
        } else {
            network = ["-nic", "none"]
        }
        // guest/initramfs-init picks the stage-2 init by ferry.init=.
        let commandLine =
            "console=ttyS0 quiet panic=-1 loglevel=4" + (guestInit == .systemd ? " ferry.init=systemd" : "")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: qemu)
        process.arguments =
            [
                "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "\(memoryMegabytes)",
                "-display", "none", "-monitor", "none", "-serial", "file:\(consoleFile.path)", "-no-reboot",
                "-kernel", kernel.image, "-initrd", initramfs.path,
                "-append", commandLine,
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
                "-virtfs", "local,path=\(results.path),mount_tag=results,security_model=none,multidevs=remap",
            ] + network
        let logHandle = try FileHandle(forWritingTo: qemuLog)
        defer { try? logHandle.close() }
        process.standardOutput = logHandle
        process.standardError = logHandle
        process.standardInput = FileHandle.nullDevice

        let start = ContinuousClock.now
        try process.run()
        let deadline = start + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(200))
        }
        let timedOut = process.isRunning
        if timedOut {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        let duration = ContinuousClock.now - start

        func read(_ url: URL) -> String { String(decoding: (try? Data(contentsOf: url)) ?? Data(), as: UTF8.self) }
        let exitText = read(results.appendingPathComponent("exit-code")).trimmingCharacters(in: .whitespacesAndNewlines)
        let milliseconds = Int(read(results.appendingPathComponent("job-milliseconds"))
            .trimmingCharacters(in: .whitespacesAndNewlines))
        var console = read(consoleFile)
        let qemuOutput = read(qemuLog)
        if !qemuOutput.isEmpty { console += "\n--- qemu ---\n\(qemuOutput)" }
        if !timedOut && process.terminationStatus != 0 {
            console += "\n[qemu exited with status \(process.terminationStatus)]"
        }
        return GuestRun(
            exitCode: Int32(exitText), output: read(results.appendingPathComponent("output.log")),
            dmesg: read(results.appendingPathComponent("dmesg.log")), console: console, timedOut: timedOut,
            duration: duration, scriptDuration: milliseconds.map { .milliseconds($0) }, directory: results)
    }

    /// Records a test failure with everything the run left unless the guest script exited 0;
    /// removes the run's files when it did, and keeps them (naming the directory) when it did not.
    /// Always prints how long the run took.
    static func expectSuccess(_ run: GuestRun, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let script = run.scriptDuration.map { ", guest script \(seconds($0))" } ?? ""
        print("VM \(what): \(seconds(run.duration)) in all\(script)")
        if run.exitCode == 0 {
            discard(run)
        } else {
            Issue.record("\(what) failed in the VM.\n\(run.diagnostics)", sourceLocation: sourceLocation)
        }
    }

    /// `12.3 s`.
    static func seconds(_ duration: Duration) -> String {
        let (whole, attoseconds) = duration.components
        return "\(whole).\(attoseconds / 100_000_000_000_000_000) s"
    }

    /// Removes a run's files (the parent directory holds the console and qemu logs).
    static func discard(_ run: GuestRun) {
        try? FileManager.default.removeItem(at: run.directory.deletingLastPathComponent())
    }

    // MARK: - The kernel and the initramfs

    /// A Debian kernel image with a module tree that has scsi_debug.
    struct Kernel {
        var version: String
        var image: String
        var modules: String

        /// The newest `/boot/vmlinuz-V` whose `/lib/modules/V` has scsi_debug (or `$FERRY_VM_KERNEL`,
        /// a version). Fails with what to install when there is none.
        static func find() throws -> Kernel {
            let fileManager = FileManager.default
            let versions: [String]
            if let wanted = ProcessInfo.processInfo.environment["FERRY_VM_KERNEL"] {
                versions = [wanted]
            } else {
                versions = ((try? fileManager.contentsOfDirectory(atPath: "/lib/modules")) ?? [])
                    .sorted { $0.compare($1, options: .numeric) == .orderedDescending }
            }
            for version in versions {
                let image = "/boot/vmlinuz-\(version)"
                let modules = "/lib/modules/\(version)"
                let scsi = "\(modules)/kernel/drivers/scsi"
                let hasScsiDebug = ((try? fileManager.contentsOfDirectory(atPath: scsi)) ?? []).contains {
                    $0.hasPrefix("scsi_debug.ko")
                }
                if hasScsiDebug && fileManager.isReadableFile(atPath: image) {
                    return Kernel(version: version, image: image, modules: modules)
                }
            }
            throw VMFailure(
                "no kernel for the VM tests: they need /boot/vmlinuz-V with scsi_debug in /lib/modules/V. "
                    + "Install linux-image-amd64 (scripts/install-deps --test installs \(packages)). "
                    + "The VM tests never skip.")
        }
    }

    /// The busybox initramfs for `kernel`, built once and cached in `.build/vm-tests`, keyed by the
    /// kernel version and a digest of its /init and module list.
    static func buildInitramfs(for kernel: Kernel) throws -> URL {
        let busybox = try locate("busybox", package: "busybox-static", in: ["/bin", "/usr/bin"])
        _ = try locate("cpio", package: "cpio")
        _ = try locate("modprobe", package: "kmod", in: ["/sbin", "/usr/sbin"])
        let initScript = try Data(contentsOf: guestDirectory.appendingPathComponent("initramfs-init"))

        var modules: [String] = []
        for module in initramfsModules {
            let dependencies = try capture("/usr/bin/env", ["modprobe", "-S", kernel.version, "--show-depends", module])
            for line in dependencies.split(separator: "\n") {
                // "insmod /lib/modules/V/kernel/.../x.ko[.xz] " (builtin modules print "builtin x").
                let words = line.split(separator: " ")
                guard words.count >= 2, words[0] == "insmod" else { continue }
                let path = String(words[1])
                if !modules.contains(path) { modules.append(path) }
            }
        }
        var digest = fnv1a(initScript)
        digest = fnv1a(Data(modules.joined(separator: "\n").utf8), seed: digest)
        let cache = packageRoot.appendingPathComponent(".build/vm-tests")
        let output = cache.appendingPathComponent(
            "initramfs-\(kernel.version)-\(String(digest, radix: 16)).cpio.gz")
        if FileManager.default.fileExists(atPath: output.path) { return output }

        try FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
        let staging = cache.appendingPathComponent("staging-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: staging) }
        try FileManager.default.createDirectory(
            at: staging.appendingPathComponent("bin"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: busybox, toPath: staging.appendingPathComponent("bin/busybox").path)
        try initScript.write(to: staging.appendingPathComponent("init"))
        chmod(staging.appendingPathComponent("init").path, 0o755)
        var order: [String] = []
        for module in modules {
            // busybox insmod takes plain .ko files only: unpack compressed modules.
            var relative = String(module.dropFirst())
            let target = staging.appendingPathComponent(relative)
            try FileManager.default.createDirectory(
                at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            if module.hasSuffix(".xz") || module.hasSuffix(".zst") {
                guard let ko = relative.range(of: ".ko") else {
                    throw VMFailure("modprobe named a compressed module without .ko: \(module)")
                }
                relative = String(relative[..<ko.upperBound])
                let tool = module.hasSuffix(".xz") ? "xz" : "zstd"
                _ = try capture("/bin/sh", ["-c", "\(tool) -dc '\(module)' > '\(staging.path)/\(relative)'"])
            } else {
                try FileManager.default.copyItem(atPath: module, toPath: target.path)
            }
            order.append(relative)
        }
        try (order.joined(separator: "\n") + "\n").write(
            to: staging.appendingPathComponent("modules.order"), atomically: true, encoding: .utf8)
        let partial = cache.appendingPathComponent("initramfs-\(UUID().uuidString).partial")
        _ = try capture(
            "/bin/sh",
            ["-c", "cd '\(staging.path)' && find . | cpio -o -H newc --quiet | gzip -1 > '\(partial.path)'"])
        try FileManager.default.moveItem(at: partial, to: output)
        return output
    }

    // MARK: - Helpers

    /// The full path of `name`; fails with what to install.
    static func locate(_ name: String, package: String, in extra: [String] = []) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + extra + ["/usr/bin", "/usr/sbin", "/sbin"]
        for directory in directories where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        throw VMFailure(
            "\(name) is not installed: install \(package) (scripts/install-deps --test installs \(packages)). "
                + "The VM tests never skip.")
    }

    /// Runs a short host command and returns its standard output; fails on a non-zero exit.
    static func capture(_ executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let errorData = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw VMFailure(
                "\(executable) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus): "
                    + String(decoding: errorData, as: UTF8.self))
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// FNV-1a over `data`: a digest that is stable across runs (Swift's `Hasher` is seeded per process).
    static func fnv1a(_ data: Data, seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
        data.reduce(seed) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01b3 }
    }

    static func shellQuoted(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// The `ferryd` that `swift test` built: `$FERRYD` if set, else the one beside the test bundle
    /// (on Linux `.build/<triple>/debug/<Package>PackageTests.xctest` sits next to `ferryd`), else
    /// the one in `swift build --show-bin-path`. The guest sees the same path through its root.
    static func locateFerryd() throws -> String {
        if let path = ProcessInfo.processInfo.environment["FERRYD"] { return path }
        var directory = URL(fileURLWithPath: Bundle.main.executablePath ?? CommandLine.arguments[0])
            .resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("ferryd").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        if let binPath = try? capture(
            "/usr/bin/env", ["swift", "build", "--show-bin-path", "--package-path", packageRoot.path])
        {
            let candidate = binPath.trimmingCharacters(in: .whitespacesAndNewlines) + "/ferryd"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw VMFailure("ferryd was not found beside the test bundle nor in swift build's bin path: run swift build")
    }
}

