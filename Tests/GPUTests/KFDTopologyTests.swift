import Foundation
import OCI
import Testing

@testable import GPU

@Suite("KFD topology")
struct KFDTopologyTests {
    @Test(
        "gfx_target_version names as LLVM and Triton spell them",
        arguments: [
            (UInt64(90010), "gfx90a"), (90402, "gfx942"), (110000, "gfx1100"), (100300, "gfx1030"),
            (90000, "gfx900"), (90008, "gfx908"), (90400, "gfx940"), (90500, "gfx950"), (100102, "gfx1012"),
            (110001, "gfx1101"), (110501, "gfx1151"), (120001, "gfx1201"), (90012, "gfx90c"),
        ])
    func gfxNames(version: UInt64, name: String) {
        #expect(KFDTopology.gfxName(version: version) == name)
    }

    @Test("CPU nodes and impossible versions have no name")
    func unnamable() {
        #expect(KFDTopology.gfxName(version: 0) == nil)
        #expect(KFDTopology.gfxName(version: 91600) == nil)  // minor 16 needs two hex digits
        #expect(KFDTopology.gfxName(version: 90416) == nil)
    }

    @Test("wave size fallback: 64 on gfx9 (CDNA), 32 on gfx10+ (RDNA)")
    func waveFallback() {
        #expect(KFDTopology.defaultWaveFrontSize(version: 90402) == 64)
        #expect(KFDTopology.defaultWaveFrontSize(version: 90010) == 64)
        #expect(KFDTopology.defaultWaveFrontSize(version: 100300) == 32)
        #expect(KFDTopology.defaultWaveFrontSize(version: 110000) == 32)
    }

    @Test("properties parsing keeps key/value lines and skips the rest")
    func parseProperties() {
        let text = "gfx_target_version 90402\nwave_front_size 64\nunique_id 18446744073709551615\n\ngarbage\nname x y\n"
        let properties = KFDTopology.parseProperties(text)
        #expect(properties["gfx_target_version"] == 90402)
        #expect(properties["wave_front_size"] == 64)
        #expect(properties["unique_id"] == UInt64.max)
        #expect(properties.count == 3)
    }

    @Test("MI300X host: two CPU nodes skipped, eight GPU nodes read in node order")
    func mi300xNodes() throws {
        let (nodes, problems) = KFDTopology.gpuNodes(root: try Fixtures.kfdRoot("mi300x"))
        #expect(problems.isEmpty)
        #expect(nodes.map(\.node) == ["2", "3", "4", "5", "6", "7", "8", "9"])
        #expect(nodes.allSatisfy { $0.gfxTargetVersion == 90402 && $0.waveFrontSize == 64 })
    }

    @Test("a missing topology directory means no AMD GPU, not a problem")
    func missingRoot() {
        let (nodes, problems) = KFDTopology.gpuNodes(root: "/nonexistent/mcvfs-tests/kfd/topology/nodes")
        #expect(nodes.isEmpty)
        #expect(problems.isEmpty)
    }

    @Test("node 10 sorts after node 2; a node without properties is a problem, the others still count")
    func orderingAndUnreadableNode() throws {
        try Fixtures.withTemporaryDirectory { dir in
            let root = try Fixtures.writeTopology(
                [("10", "gfx_target_version 90402\nwave_front_size 64\n"), ("2", "gfx_target_version 110000\n")],
                in: dir)
            try FileManager.default.createDirectory(atPath: root + "/3", withIntermediateDirectories: true)
            let (nodes, problems) = KFDTopology.gpuNodes(root: root)
            #expect(
                nodes == [
                    .init(node: "2", gfxTargetVersion: 110000, waveFrontSize: nil),
                    .init(node: "10", gfxTargetVersion: 90402, waveFrontSize: 64),
                ])
            #expect(problems.count == 1)
            guard case .unreadableTopology(let path, _)? = problems.first else {
                Issue.record("expected unreadableTopology, got \(problems)")
                return
            }
            #expect(path.hasSuffix("/3/properties"))
        }
    }
}
