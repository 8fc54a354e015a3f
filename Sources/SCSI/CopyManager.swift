/// The EXTENDED COPY (LID1) copy manager (SPC-4 §6.4).
public final class CopyManager: Sendable {
    let directory: CopyTargetDirectory

    public init(directory: CopyTargetDirectory) {
        self.directory = directory
    }

    public func extendedCopy(_ request: SCSIRequest, source: CopyEndpoint) -> SCSIResult {
        .checkCondition(.invalidCommandOperationCode)
    }

    public func receiveCopyResults(_ request: SCSIRequest) -> SCSIResult {
        .checkCondition(.invalidCommandOperationCode)
    }

    public static func thirdPartyCopyVPDPage() -> [UInt8] { [0x00, 0x8f, 0x00, 0x00] }
}
