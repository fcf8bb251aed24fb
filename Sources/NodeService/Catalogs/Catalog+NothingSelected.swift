import OCI

extension Catalog {
    /// What `mount`, `fetch` and `extract` all say when no image suits the selected GPUs (one rule: a warning,
    /// since a mount still serves its writable upper and a refresh may add images later), naming the targets the
    /// repository has so the fix is at hand; nil when an image is used.
    public func nothingSelectedWarning(selection: String) -> String? {
        guard used.isEmpty else { return nil }
        guard !entries.isEmpty else { return "\(reference) has no cache image (yet): nothing to serve" }
        let targets = Set(entries.flatMap { $0.targets ?? [] }.map(\.description)).sorted()
        // A target mismatch is what "the repository has" answers; any other reason a cache image was left out (a
        // Triton version, a signature policy) is said as it is, since passing another --gpu would not help. Tags
        // that are no cache images (signatures, other artifacts) are no news.
        let reasons = Set(
            skipped.filter { !$0.kinds.isEmpty }.compactMap(\.skipReason).filter {
                !$0.contains("do not match the selected GPUs")
            }
        ).sorted()
        let has = targets.isEmpty ? "" : "; the repository has \(targets.joined(separator: ", ")) (pass one to --gpu)"
        let why = reasons.isEmpty ? "" : " (\(reasons.joined(separator: "; ")))"
        return "no image of \(reference) matches \(selection)\(has)\(why)"
    }
}
