extension OverlayFileSystem {
    /// Whether `name`, inside an upper directory, is the overlay's own bookkeeping (a whiteout, an opaque-directory
    /// marker, the work directory) rather than something a user wrote: what exports and upper sizes leave out.
    public static func isBookkeeping(_ name: String) -> Bool { UpperLayer.isReserved(name) }
}
