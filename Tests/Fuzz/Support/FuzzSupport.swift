import FuzzDriver
import Glibc

/// The harness libFuzzer calls with each input.
nonisolated(unsafe) private var harness: (UnsafeBufferPointer<UInt8>) -> Void = { _ in }

/// Runs libFuzzer on `body`, which gets each input the fuzzer makes, and exits with libFuzzer's status.
public func runFuzzer(_ body: @escaping (UnsafeBufferPointer<UInt8>) -> Void) -> Never {
    harness = body
    exit(
        ferry_fuzz_main(CommandLine.argc, CommandLine.unsafeArgv) { start, count in
            harness(UnsafeBufferPointer(start: start, count: count))
            return 0
        })
}

/// Stops the run when an invariant does not hold. Unlike `precondition`, it says which one in a release build:
/// the message goes to standard error before the trap that libFuzzer reports as a crash.
public func require(
    _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String, file: StaticString = #file,
    line: UInt = #line
) {
    guard !condition() else { return }
    requireFailed(message(), file: file, line: line)
}

public func requireFailed(_ message: @autoclosure () -> String, file: StaticString = #file, line: UInt = #line) -> Never {
    let text = "invariant failed at \(file):\(line): \(message())\n"
    _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    abort()
}
