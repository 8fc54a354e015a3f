/// Waiting for an event that ferryd or a socket makes visible, with a deadline, instead of sleeping for a while and
/// hoping it has happened: the poll interval only bounds how late the wait notices the event, and a wait that times
/// out fails the test with what it waited for, instead of letting the test go on as if the event had happened.

/// Waits until `condition` holds; throws an ``IntegrationFailure`` naming `what` once `timeout` has passed without it.
func waitUntil(
    _ what: @autoclosure () -> String, within timeout: Duration = .seconds(10), _ condition: () throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while try !condition() {
        guard ContinuousClock.now < deadline else {
            throw IntegrationFailure("not within \(timeout): \(what())")
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}

extension ConfiguredFerryd {
    /// Waits until at least `count` lines of ferryd's log contain `text`; throws, with the end of the log, once
    /// `timeout` has passed without them.
    func waitForLog(containing text: String, lines count: Int = 1, within timeout: Duration = .seconds(10))
        async throws
    {
        try await waitUntil(
            "\(count) line(s) of ferryd's log with \"\(text)\", it has \(logLines(containing: text)):\n"
                + "\(log.suffix(4000))",
            within: timeout
        ) { logLines(containing: text) >= count }
    }
}
