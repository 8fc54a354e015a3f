/// The mode pages of the emulated block device (SPC-4 §7.5, SBC-4 §6.5) and their current,
/// changeable and default values. Saved values are not implemented.
package struct ModePages: Sendable, Equatable {
    /// > The page control (PC) field defines the type of mode parameter values to be returned.
    package enum PageControl: UInt8 {
        case current = 0
        case changeable = 1
        case `default` = 2
        case saved = 3
    }

    static let cachingPageCode: UInt8 = 0x08
    static let controlPageCode: UInt8 = 0x0a
    static let informationalExceptionsControlPageCode: UInt8 = 0x1c
    static let allPages: UInt8 = 0x3f

    /// Page codes in the order MODE SENSE returns them for page 3Fh.
    static let pageCodes: [UInt8] = [cachingPageCode, controlPageCode, informationalExceptionsControlPageCode]

    /// Current values, keyed by page code; each page includes its two-byte header.
    private(set) var current: [UInt8: [UInt8]]
    let defaults: [UInt8: [UInt8]]

    package init(writeCacheEnabled: Bool) {
        var caching = [UInt8](repeating: 0, count: 20)
        caching[0] = Self.cachingPageCode
        caching[1] = 0x12
        // > WCE: a write cache enable (WCE) bit set to one specifies that the device server may
        // > complete a WRITE command with GOOD status after transferring the data to the cache.
        if writeCacheEnabled { caching[2] |= 0x04 }
        var control = [UInt8](repeating: 0, count: 12)
        control[0] = Self.controlPageCode
        control[1] = 0x0a
        // QUEUE ALGORITHM MODIFIER 1h: unrestricted reordering allowed; QERR 00b.
        control[3] = 0x10
        // BUSY TIMEOUT PERIOD: unlimited.
        control[8] = 0xff
        control[9] = 0xff
        var exceptions = [UInt8](repeating: 0, count: 12)
        exceptions[0] = Self.informationalExceptionsControlPageCode
        exceptions[1] = 0x0a
        // DEXCPT: informational exception operations disabled.
        exceptions[2] = 0x08
        let pages = [
            Self.cachingPageCode: caching, Self.controlPageCode: control,
            Self.informationalExceptionsControlPageCode: exceptions,
        ]
        current = pages
        defaults = pages
    }

    /// The bits an application client may change with MODE SELECT.
    static let changeable: [UInt8: [UInt8]] = {
        var caching = [UInt8](repeating: 0, count: 20)
        caching[0] = cachingPageCode
        caching[1] = 0x12
        caching[2] = 0x04  // WCE
        var control = [UInt8](repeating: 0, count: 12)
        control[0] = controlPageCode
        control[1] = 0x0a
        control[2] = 0x04  // D_SENSE
        control[4] = 0x08  // SWP
        control[5] = 0x40  // TAS
        var exceptions = [UInt8](repeating: 0, count: 12)
        exceptions[0] = informationalExceptionsControlPageCode
        exceptions[1] = 0x0a
        exceptions[2] = 0x08 | 0x04  // DEXCPT, TEST
        exceptions[3] = 0x0f  // MRIE
        for index in 4..<12 { exceptions[index] = 0xff }  // INTERVAL TIMER, REPORT COUNT
        return [cachingPageCode: caching, controlPageCode: control, informationalExceptionsControlPageCode: exceptions]
    }()

    /// WCE of the current caching mode page.
    package var writeCacheEnabled: Bool { current[Self.cachingPageCode]![2] & 0x04 != 0 }
    /// D_SENSE of the current control mode page: sense data in descriptor format.
    package var descriptorFormatSense: Bool { current[Self.controlPageCode]![2] & 0x04 != 0 }
    /// TAS of the current control mode page.
    package var taskAbortedStatus: Bool { current[Self.controlPageCode]![5] & 0x40 != 0 }
    /// SWP of the current control mode page:
    /// > A software write protect (SWP) bit set to one specifies that the logical unit shall
    /// > inhibit writing to the medium after writing all cached or buffered write data, if any.
    package var softwareWriteProtect: Bool { current[Self.controlPageCode]![4] & 0x08 != 0 }

    /// The pages MODE SENSE returns for `pageCode` and `subpageCode`; throws the sense data to
    /// report for a page or page control that is not implemented.
    package func sense(pageCode: UInt8, subpageCode: UInt8, control: PageControl) throws(SenseData) -> [UInt8] {
        if control == .saved {
            throw SenseData(.illegalRequest, .savingParametersNotSupported)
        }
        let codes: [UInt8]
        if pageCode == Self.allPages {
            // > 3Fh/00h: return all mode pages (not including subpages); 3Fh/FFh: all pages and subpages.
            guard subpageCode == 0x00 || subpageCode == 0xff else { throw .invalidFieldInCDB(byte: 3) }
            codes = Self.pageCodes
        } else {
            guard Self.pageCodes.contains(pageCode) else { throw .invalidFieldInCDB(byte: 2, bit: 5) }
            guard subpageCode == 0x00 else { throw .invalidFieldInCDB(byte: 3) }
            codes = [pageCode]
        }
        var data: [UInt8] = []
        for code in codes {
            switch control {
            case .current: data += current[code]!
            case .changeable: data += Self.changeable[code]!
            case .default: data += defaults[code]!
            case .saved: break
            }
        }
        return data
    }

    /// Applies the mode pages of a MODE SELECT parameter list (after the header and block
    /// descriptors). `offset` is the position of `pages` in the parameter list, for field pointers.
    /// Returns whether any current value changed.
    package mutating func select(_ pages: ArraySlice<UInt8>, offset: Int) throws(SenseData) -> Bool {
        var updated = current
        var index = pages.startIndex
        while index < pages.endIndex {
            let fieldOffset = offset + (index - pages.startIndex)
            // > When using the MODE SELECT command, the PS bit is reserved.
            guard pages[index] & 0x80 == 0 else { throw .invalidFieldInParameterList(byte: fieldOffset, bit: 7) }
            // SPF: no subpages are implemented.
            guard pages[index] & 0x40 == 0 else { throw .invalidFieldInParameterList(byte: fieldOffset, bit: 6) }
            let code = pages[index] & 0x3f
            guard let changeable = Self.changeable[code], let page = updated[code] else {
                throw .invalidFieldInParameterList(byte: fieldOffset, bit: 5)
            }
            guard index + 1 < pages.endIndex else { throw .parameterListLengthError }
            guard Int(pages[index + 1]) == page.count - 2 else {
                throw .invalidFieldInParameterList(byte: fieldOffset + 1)
            }
            guard index + page.count <= pages.endIndex else { throw .parameterListLengthError }
            var new = page
            for byte in 2..<page.count {
                let value = pages[index + byte]
                let stray = (value ^ page[byte]) & ~changeable[byte]
                if stray != 0 {
                    throw .invalidFieldInParameterList(byte: fieldOffset + byte, bit: 7 - stray.leadingZeroBitCount)
                }
                new[byte] = value
            }
            updated[code] = new
            index += page.count
        }
        let changed = updated != current
        current = updated
        return changed
    }

    /// Returns every page to its default value (a logical unit reset with no saved pages).
    package mutating func reset() {
        current = defaults
    }
}
