/// Where ferryd listens for ferryctl unless configured otherwise.
public let defaultControlSocketPath = "/run/ferry/control.sock"
