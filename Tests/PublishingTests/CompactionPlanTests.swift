import ContentHash
import Foundation
import OCI
import Testing

@testable import Publishing

/// Which images compaction merges and which tags it removes, decided without a registry.
@Suite struct CompactionPlanTests {
    static let repository = "registry.test/org/cache"
    static let staging = "registry.test/org/staging"
    static let sm90 = GPUTarget(backend: .cuda, arch: "90", warpSize: 32)
    static let gfx942 = GPUTarget(backend: .hip, arch: "gfx942", warpSize: 64)
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func image(
        _ tag: String, _ keys: Set<String>, target: GPUTarget = sm90, kind: CacheLabels.Kind = .triton,
        in repository: String = repository, merged: [CompactionPlan.Image] = [], at mergedAt: Date? = nil
    ) -> CompactionPlan.Image {
        let digest = SHA256Hasher.digest(Data("\(repository):\(tag)".utf8))
        let record = mergedAt.map { MergeRecord(sources: merged.map(\.source), mergedAt: $0) }
        return CompactionPlan.Image(
            source: MergeRecord.Source(repository: repository, tag: tag, digest: digest), target: target, kind: kind,
            keys: keys, record: record)
    }

    func tags(_ removals: [CompactionPlan.Removal]) -> [String] { removals.map(\.image.source.tag) }

    @Test func aTargetWithSeveralImagesIsMergedInTagOrderAndALoneImageIsLeft() {
        let a = image("fleet-cuda-sm90-b", ["K1"])
        let b = image("fleet-cuda-sm90-a", ["K2"])
        let lone = image("fleet-hip-gfx942-c", ["K3"], target: Self.gfx942)
        let merges = CompactionPlan.merges([a, b, lone], destination: Self.repository)
        #expect(merges.map(\.target) == [Self.sm90])
        #expect(merges[0].images.map(\.source.tag) == ["fleet-cuda-sm90-a", "fleet-cuda-sm90-b"])
    }

    @Test func vLLMImagesOfATargetMergeIntoOneImageApartFromItsTritonImages() {
        let h1 = image("fleet-vllm-cuda-sm90-a", ["0a1b2c3d4e"], kind: .vllm)
        let h2 = image("fleet-vllm-cuda-sm90-b", ["7f7f7f7f7f"], kind: .vllm)
        let triton = image("fleet-cuda-sm90-c", ["K1"])
        let lone = image("fleet-cuda-sm90-d", ["K2"])
        let merges = CompactionPlan.merges([h1, h2, triton, lone], destination: Self.repository)
        #expect(merges.map(\.kind) == [.triton, .vllm])
        #expect(
            merges.map { $0.images.map(\.source.tag) } == [
                [triton, lone].map(\.source.tag), [h1, h2].map(\.source.tag),
            ])
        #expect(merges.allSatisfy { $0.target == Self.sm90 })
        // A lone vLLM image beside Triton images of its target is not merged with them.
        #expect(CompactionPlan.merges([h1, triton, lone], destination: Self.repository).map(\.kind) == [.triton])
    }

    @Test func aVLLMTagGoesOnlyWhenAVLLMCompactionHoldsEveryHash() {
        let h1 = image("fleet-vllm-cuda-sm90-a", ["0a1b2c3d4e"], kind: .vllm)
        let h2 = image("fleet-vllm-cuda-sm90-b", ["7f7f7f7f7f"], kind: .vllm)
        let past = now.addingTimeInterval(-60)
        // A Triton compaction of the target that happens to hold a KEY of that name covers no vLLM image.
        let triton = image("fleet-cuda-sm90-c", ["0a1b2c3d4e", "7f7f7f7f7f"], merged: [], at: past)
        let plan = CompactionPlan.removals([h1, h2, triton], destination: Self.repository, now: now, keepFor: 0)
        #expect(plan.remove.isEmpty)
        #expect(plan.keep.map(\.reason) == ["not merged yet", "not merged yet"])
        let vllm = image(
            "fleet-vllm-cuda-sm90-d", ["0a1b2c3d4e", "7f7f7f7f7f"], kind: .vllm, merged: [h1, h2], at: past)
        let due = CompactionPlan.removals([h1, h2, triton, vllm], destination: Self.repository, now: now, keepFor: 0)
        #expect(tags(due.remove) == [h1, h2].map(\.source.tag))
        #expect(due.remove.allSatisfy { $0.coveredBy == vllm })
        // A new hash of the target is merged again, with the vLLM compaction, not the Triton one.
        let h3 = image("fleet-vllm-cuda-sm90-e", ["99aa99aa99"], kind: .vllm)
        let merges = CompactionPlan.merges([h1, h2, h3, triton, vllm], destination: Self.repository)
        #expect(merges.map(\.kind) == [.vllm])
        #expect(Set(merges[0].images) == [h1, h2, h3, vllm])
    }

    @Test func nothingIsMergedAgainWhileTheNewestCompactionHoldsEveryKernel() {
        let a = image("fleet-cuda-sm90-a", ["K1"])
        let b = image("fleet-cuda-sm90-b", ["K2"])
        let compaction = image("fleet-cuda-sm90-c", ["K1", "K2"], merged: [a, b], at: now)
        #expect(CompactionPlan.merges([a, b, compaction], destination: Self.repository).isEmpty)
        // A node republishing kernels the compaction has changes nothing either.
        let again = image("fleet-cuda-sm90-d", ["K2"])
        #expect(CompactionPlan.merges([a, b, compaction, again], destination: Self.repository).isEmpty)
        // A new kernel does.
        let fresh = image("fleet-cuda-sm90-e", ["K3"])
        let merges = CompactionPlan.merges([a, b, compaction, fresh], destination: Self.repository)
        #expect(merges.first?.images.count == 4)
    }

    @Test func imagesOfAnotherRepositoryArePromotedEvenAlone() {
        let staged = image("fleet-cuda-sm90-a", ["K1"], in: Self.staging)
        let merges = CompactionPlan.merges([staged], destination: Self.repository)
        #expect(merges.map(\.images.count) == [1])
    }

    @Test func mergedTagsGoOnlyOnceTheCompactionIsKeepForOld() {
        let a = image("fleet-cuda-sm90-a", ["K1"])
        let b = image("fleet-cuda-sm90-b", ["K2"])
        let compaction = image("fleet-cuda-sm90-c", ["K1", "K2"], merged: [a, b], at: now.addingTimeInterval(-60))
        let early = CompactionPlan.removals([a, b, compaction], destination: Self.repository, now: now, keepFor: 3600)
        #expect(early.remove.isEmpty)
        #expect(early.keep.map(\.image.source.tag) == ["fleet-cuda-sm90-a", "fleet-cuda-sm90-b"])
        #expect(early.keep[0].reason.hasPrefix("merged; kept until"))
        let due = CompactionPlan.removals([a, b, compaction], destination: Self.repository, now: now, keepFor: 60)
        #expect(tags(due.remove) == ["fleet-cuda-sm90-a", "fleet-cuda-sm90-b"])
        #expect(due.remove.allSatisfy { $0.coveredBy == compaction })
    }

    @Test func aCompactionLabelWithoutTheSignersSignatureCoversNothingAndStandsForNoMerge() {
        // A publisher with a node key labels its image as a compaction that merged a and b and holds their KEYs.
        let a = image("fleet-cuda-sm90-a", ["K1"])
        let b = image("fleet-cuda-sm90-b", ["K2"])
        let forged = image("fleet-cuda-sm90-f", ["K1", "K2"], merged: [a, b], at: now.addingTimeInterval(-7200))
        let plan = CompactionPlan.removals(
            [a, b, forged], destination: Self.repository, now: now, keepFor: 60, trusted: [])
        #expect(plan.remove.isEmpty, "honest tags are never removed as covered by an untrusted compaction")
        #expect(
            CompactionPlan.merges([a, b, forged], destination: Self.repository, trusted: []).map(\.images.count)
                == [3])
        // The same image signed by the compaction's own key covers them.
        let own = CompactionPlan.removals(
            [a, b, forged], destination: Self.repository, now: now, keepFor: 60, trusted: [forged.source])
        #expect(tags(own.remove) == ["fleet-cuda-sm90-a", "fleet-cuda-sm90-b"])
    }

    @Test func aTagWithAKernelTheCompactionLacksStays() {
        let a = image("fleet-cuda-sm90-a", ["K1", "K9"])
        let compaction = image("fleet-cuda-sm90-c", ["K1"], merged: [a], at: now.addingTimeInterval(-7200))
        let plan = CompactionPlan.removals([a, compaction], destination: Self.repository, now: now, keepFor: 60)
        #expect(plan.remove.isEmpty)
        #expect(
            plan.keep.map(\.reason) == [
                "merged into fleet-cuda-sm90-c, which left out KEY(s) K9: images of one rank hold different bytes "
                    + "for them (compact's conflicts)"
            ])
        let unmerged = image("fleet-cuda-sm90-b", ["K8"])
        let later = CompactionPlan.removals(
            [a, unmerged, compaction], destination: Self.repository, now: now, keepFor: 60)
        #expect(later.keep.map(\.reason).last == "not merged yet")
    }

    @Test func aKeyTheCompactionLeftOutMakesNoNewCompactionUntilAnImageItDidNotMergeArrives() {
        // a and b disagreed on K: the compaction holds neither copy. Running compaction again changes nothing...
        let a = image("fleet-cuda-sm90-a", ["K", "K1"])
        let b = image("fleet-cuda-sm90-b", ["K", "K2"])
        let compaction = image("fleet-cuda-sm90-c", ["K1", "K2"], merged: [a, b], at: now)
        #expect(CompactionPlan.merges([a, b, compaction], destination: Self.repository).isEmpty)
        // ... until an image it did not merge brings a kernel it lacks (K again, once an operator settled it).
        let fresh = image("fleet-cuda-sm90-d", ["K"])
        #expect(CompactionPlan.merges([a, fresh, compaction], destination: Self.repository).map(\.images.count) == [3])
    }

    @Test func earlierCompactionsOfThisSignerRankFirstOldestFirstAndEveryOtherImageIsOnePeer() {
        let a = image("fleet-cuda-sm90-a", ["K1"])
        let old = image("fleet-cuda-sm90-c1", ["K1"], merged: [a], at: now.addingTimeInterval(-7200))
        let new = image("fleet-cuda-sm90-c2", ["K1", "K2"], merged: [a, old], at: now.addingTimeInterval(-3600))
        // Labels anyone can write: a "compaction" without this signer's signature is a fleet image like the others.
        let forged = image("fleet-cuda-sm90-c0", ["K1"], merged: [a], at: now.addingTimeInterval(-86400))
        let b = image("fleet-cuda-sm90-b", ["K2"])
        let staged = image("fleet-cuda-sm90-s", ["K3"], in: Self.staging)
        let merge = CompactionPlan.Merge(target: Self.sm90, kind: .triton, images: [a, b, forged, old, new, staged])
        let batches = CompactionPlan.batches(
            of: merge, destination: Self.repository, ownCompactions: [old.source, new.source])
        #expect(batches[old.source] == 0 && batches[new.source] == 1)
        #expect([a, b, forged, staged].allSatisfy { batches[$0.source] == 2 })
    }

    @Test func anOlderCompactionGoesWhenANewerOneHoldsItAndTheNewestNeverGoes() {
        let a = image("fleet-cuda-sm90-a", ["K1"])
        let old = image("fleet-cuda-sm90-c1", ["K1"], merged: [a], at: now.addingTimeInterval(-7200))
        let b = image("fleet-cuda-sm90-b", ["K2"])
        let new = image("fleet-cuda-sm90-c2", ["K1", "K2"], merged: [a, old, b], at: now.addingTimeInterval(-3600))
        let plan = CompactionPlan.removals([a, old, b, new], destination: Self.repository, now: now, keepFor: 60)
        #expect(tags(plan.remove) == ["fleet-cuda-sm90-a", "fleet-cuda-sm90-b", "fleet-cuda-sm90-c1"])
        #expect(plan.remove.allSatisfy { $0.coveredBy == new })
        // Even at keep-for 0, a compaction nothing newer holds is never removed.
        let now0 = CompactionPlan.removals([new], destination: Self.repository, now: now, keepFor: 0)
        #expect(now0.remove.isEmpty)
    }

    @Test func aTagIsRemovedWhetherOrNotItsCompactionRecordedIt() {
        // A kernel republished after the compaction, already held by it, goes once the compaction is old enough.
        let compaction = image("fleet-cuda-sm90-c", ["K1", "K2"], at: now.addingTimeInterval(-7200))
        let late = image("fleet-cuda-sm90-z", ["K2"])
        let plan = CompactionPlan.removals([compaction, late], destination: Self.repository, now: now, keepFor: 60)
        #expect(tags(plan.remove) == ["fleet-cuda-sm90-z"])
    }

    @Test func promotedTagsGoFromTheStagingRepositoryAndTargetsStayApart() {
        let staged = image("fleet-cuda-sm90-a", ["K1"], in: Self.staging)
        let other = image("fleet-hip-gfx942-b", ["K1"], target: Self.gfx942, in: Self.staging)
        let compaction = image("fleet-cuda-sm90-c", ["K1"], merged: [staged], at: now.addingTimeInterval(-7200))
        let plan = CompactionPlan.removals(
            [staged, other, compaction], destination: Self.repository, now: now, keepFor: 60)
        #expect(plan.remove.map(\.image.source.repository) == [Self.staging])
        #expect(tags(plan.remove) == ["fleet-cuda-sm90-a"])
        #expect(plan.keep.map(\.image.source.tag) == ["fleet-hip-gfx942-b"], "a compaction covers its own target")
    }
}

@Suite struct MergeRecordTests {
    @Test func aRecordRoundTripsThroughItsLabels() throws {
        let source = MergeRecord.Source(
            repository: "r/x", tag: "fleet-cuda-sm90-0123456789abcdef", digest: SHA256Hasher.digest(Data("x".utf8)))
        let record = MergeRecord(sources: [source], mergedAt: Date(timeIntervalSince1970: 1_800_000_000))
        let labels = record.labels
        #expect(labels[MergeRecord.mergedAtLabel] == "2027-01-15T08:00:00Z")
        #expect(try MergeRecord(labels: labels, image: "x") == record)
        #expect(try MergeRecord(labels: ["other": "1"], image: "x") == nil)
    }

    @Test func anUnreadableRecordIsAnErrorNotAMissingOne() {
        #expect(throws: PublishingError.self) {
            try MergeRecord(labels: [MergeRecord.mergedLabel: "[oops"], image: "x")
        }
        #expect(throws: PublishingError.self) {
            try MergeRecord(
                labels: [MergeRecord.mergedLabel: "[]", MergeRecord.mergedAtLabel: "yesterday"], image: "x")
        }
    }
}
