import Foundation
import Testing

@testable import Verification

/// The inclusion-proof walk against an independent, recursive RFC 9162 §2.1 implementation.
@Suite struct MerkleTests {
    static func leafHash(_ data: Data) -> Data { Merkle.hash(Data([0]) + data) }

    /// MTH(D[n]) by the definition: split at the largest power of two below n.
    static func root(_ leaves: ArraySlice<Data>) -> Data {
        if leaves.count == 1 { return leafHash(leaves.first!) }
        let k = split(leaves.count)
        return Merkle.node(root(leaves.prefix(k)), root(leaves.dropFirst(k)))
    }

    /// PATH(m, D[n]) by the definition.
    static func path(_ m: Int, _ leaves: ArraySlice<Data>) -> [Data] {
        if leaves.count == 1 { return [] }
        let k = split(leaves.count)
        if m < k { return path(m, leaves.prefix(k)) + [root(leaves.dropFirst(k))] }
        return path(m - k, leaves.dropFirst(k)) + [root(leaves.prefix(k))]
    }

    static func split(_ n: Int) -> Int {
        var k = 1
        while k * 2 < n { k *= 2 }
        return k
    }

    @Test(arguments: [1, 2, 3, 5, 7, 8, 13])
    func everyLeafOfTheTreeProves(size: Int) throws {
        let leaves = (0..<size).map { Data("leaf \($0)".utf8) }
        let expected = Self.root(leaves[...])
        for index in 0..<size {
            let proof = Self.path(index, leaves[...])
            let computed = try Merkle.rootFromInclusionProof(
                leaf: Self.leafHash(leaves[index]), index: Int64(index), size: Int64(size), proof: proof)
            #expect(computed == expected, "leaf \(index) of \(size)")
            if size > 1 {
                // The same proof for a neighbouring index, or with a hash flipped, does not reach the root.
                let other = (index + 1) % size
                let wrong = try? Merkle.rootFromInclusionProof(
                    leaf: Self.leafHash(leaves[index]), index: Int64(other), size: Int64(size), proof: proof)
                #expect(wrong != expected)
                var tampered = proof
                tampered[0] = tampered[0].flipping(at: 0)
                #expect(
                    try Merkle.rootFromInclusionProof(
                        leaf: Self.leafHash(leaves[index]), index: Int64(index), size: Int64(size), proof: tampered)
                        != expected)
            }
        }
    }

    @Test func malformedProofs() {
        let leaf = Self.leafHash(Data("x".utf8))
        #expect(throws: VerificationError.self) {
            try Merkle.rootFromInclusionProof(leaf: leaf, index: 3, size: 3, proof: [])
        }
        #expect(throws: VerificationError.self) {
            try Merkle.rootFromInclusionProof(leaf: leaf, index: 0, size: 4, proof: [leaf])  // too short
        }
        #expect(throws: VerificationError.self) {
            try Merkle.rootFromInclusionProof(leaf: leaf, index: 0, size: 1, proof: [leaf])  // too long
        }
    }
}
