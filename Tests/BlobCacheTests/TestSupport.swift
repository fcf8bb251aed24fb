import ContentHash
import Foundation
import OCI
import TestSupport

/// The real Triton 3.9.0 cache for cuda:90 checked into the repository.
let fixtureCache = Fixtures.cuda90

func sha256(_ data: Data) -> Digest { SHA256Hasher.digest(data) }
