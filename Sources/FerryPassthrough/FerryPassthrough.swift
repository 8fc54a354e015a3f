internal import CSGUtils

/// The version of libsgutils2 that Ferry's passthrough backend is linked with.
public var sgUtilsVersion: String { String(cString: sg_lib_version()) }
