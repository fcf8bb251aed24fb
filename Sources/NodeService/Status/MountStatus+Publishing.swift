extension MountStatus {
    /// A mount's automatic publishing (`mount --publish-to`): where it goes, how the runs went, what they pushed.
    public struct Publishing: Codable, Sendable, Equatable {
        /// `registry/repository` published to.
        public var repository: String
        public var intervalSeconds: Double
        /// The uppers harvested.
        public var uppers: [String]
        /// `sha256:<fingerprint>` of the signing key's public key; nil when images go unsigned.
        public var signingKey: String?
        public var runs = 0
        public var failures = 0
        /// Failures since the last run that worked (each is retried at the next interval).
        public var consecutiveFailures = 0
        /// RFC 3339 times.
        public var lastRun: String?
        public var lastSuccess: String?
        public var lastError: String?
        public var nextRun: String?
        public var imagesPushed = 0
        public var kernelsPublished = 0
        /// The tags the last run that pushed anything pushed.
        public var lastPushed: [String] = []
        /// Entries the last run left out, as `path: reason` (at most 20).
        public var lastSkipped: [String] = []

        public init(repository: String, intervalSeconds: Double, uppers: [String], signingKey: String?) {
            self.repository = repository
            self.intervalSeconds = intervalSeconds
            self.uppers = uppers
            self.signingKey = signingKey
        }
    }
}
