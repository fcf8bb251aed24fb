extension MountStatus {
    /// A repository mount's live refresh (`mount --refresh-interval`): when it last looked, what it added and
    /// what it left out, and why.
    public struct Refresh: Codable, Sendable, Equatable {
        public var intervalSeconds: Double
        public var refreshes = 0
        public var failures = 0
        /// RFC 3339 times.
        public var lastRefresh: String?
        public var lastError: String?
        public var nextRefresh: String?
        /// Images added to the served tree since the mount, in all.
        public var imagesAdded = 0
        /// `tag digest` of each image the last refresh that added anything added.
        public var lastAdded: [String] = []
        /// `tag: reason` of each new or moved tag the last refresh did not use (other GPUs, no valid signature,
        /// not a cache image), at most 50.
        public var lastSkipped: [String] = []
        /// Tags the last refresh saw.
        public var tags = 0

        public init(intervalSeconds: Double) { self.intervalSeconds = intervalSeconds }
    }
}
