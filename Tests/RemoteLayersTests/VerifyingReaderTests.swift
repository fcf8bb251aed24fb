import BlobCache
import ContentHash
import Foundation
import LayerArchive
import OCI
import Registry
import TestSupport
import Testing

@testable import RemoteLayers

@Suite struct VerifiedBlobTests {
    @Test func onlyBytesMatchingTheirDigestMakeOne() throws {
        let data = Data("kernel".utf8)
        let blob = try VerifiedBlob(data, matching: SHA256Hasher.digest(data))
        #expect(blob.data == data)
        #expect(throws: CacheError.self) { try VerifiedBlob(Data("other".utf8), matching: SHA256Hasher.digest(data)) }
    }

    @Test func aMemberIsCheckedAgainstItsTOCEntry() throws {
        let kernels = try KernelLayer(kernels: 1)
        let files = try remoteFiles(of: kernels.layer)
        let file = files["KEY0/add.cubin"]!
        let member = kernels.layer.blob.subdata(in: Int(file.region.offset)..<Int(file.region.end))
        #expect(try VerifiedBlob(member: member, of: file).data == kernels.layer.files["KEY0/add.cubin"])

        var damaged = member
        damaged[damaged.startIndex + 40] ^= 0x5A
        #expect(throws: (any Error).self) { try VerifiedBlob(member: damaged, of: file) }
        // The right member under another file's TOC entry is someone else's bytes.
        #expect(throws: (any Error).self) { try VerifiedBlob(member: member, of: files["KEY0/add.json"]!) }
        var lying = file
        lying.size += 1
        #expect(throws: (any Error).self) { try VerifiedBlob(member: member, of: lying) }
    }
}

@Suite struct VerifyingReaderTests {
    let kernels: KernelLayer
    let bench: FetchBench
    let files: [String: RemoteFile]

    init() throws {
        kernels = try KernelLayer()
        bench = try FetchBench([kernels.layer])
        files = try remoteFiles(of: kernels.layer)
    }

    func directory(_ key: String) -> [RemoteFile] { kernels.paths(of: key).map { files[$0]! } }

    @Test func concurrentReadersOfOneDirectoryShareOneFetch() throws {
        let reader = try bench.reader()
        let gate = InMemoryRegistry.Gate()
        bench.registry.inject { _ in .hold(gate) }
        let wanted = directory("KEY0")
        let served = Counter()
        let kernels = kernels
        let expected = kernels.layer.files
        let leader = DispatchGroup()
        spawn(in: leader) {
            let read = reader.files(wanted)
            if wanted.allSatisfy({ (try? read[$0.content]?.get().data) == expected[kernels.pathOf($0)] }) {
                served.increment()
            }
        }
        #expect(eventually { gate.held == 1 })
        // Sixteen more readers of the same directory, each wanting one file of it, join the flights in the air.
        let followers = DispatchGroup()
        for i in 0..<16 {
            spawn(in: followers) {
                let file = wanted[i % wanted.count]
                if (try? reader.files([file])[file.content]?.get().data) == expected[kernels.pathOf(file)] {
                    served.increment()
                }
            }
        }
        // Every one of them is waiting on the leader's flights, and no request was added.
        #expect(eventually { reader.waiting == 16 })
        #expect(reader.inFlight == wanted.count)
        #expect(bench.registry.requests.count == 1)
        gate.open()
        leader.wait()
        followers.wait()
        #expect(served.count == 17)
        #expect(bench.registry.requests.count == 1, "\(bench.registry.requests)")
        #expect(reader.inFlight == 0)
    }

    @Test func aCorruptedMemberFailsAloneAndTheOthersVerify() throws {
        let reader = try bench.reader()
        let wanted = directory("KEY0")
        let victim = files["KEY0/add.cubin"]!
        // The registry's copy of the blob has bytes flipped inside the victim's member.
        var blob = kernels.layer.blob
        for i in Int(victim.region.offset) + 40..<Int(victim.region.offset) + 240 { blob[i] ^= 0x5A }
        bench.registry.add(blob, as: kernels.layer.descriptor.digest)
        let read = reader.files(wanted)
        #expect(throws: (any Error).self) { try read[victim.content]!.get() }
        for file in wanted where file != victim {
            #expect(try read[file.content]!.get().data == kernels.layer.files[kernels.pathOf(file)])
        }
        #expect(reader.inFlight == 0)
        // Nothing is remembered of the failure: the next read fetches again.
        bench.registry.add(kernels.layer.blob, as: kernels.layer.descriptor.digest)
        #expect(try reader.files([victim])[victim.content]!.get().data == kernels.layer.files["KEY0/add.cubin"])
    }

    @Test func whatALandedFlightKeptIsNotFetchedAgain() throws {
        // A caller that looked before a flight landed and claims after it finds the bytes the flight kept.
        let memory = MemoryBlobCache(store: bench.store, commitDelay: .seconds(3600))
        let reader = try bench.reader(memory: memory)
        let wanted = directory("KEY1")
        _ = reader.files(wanted)
        #expect(wanted.allSatisfy { memory.data($0.content) != nil })
        let requests = bench.registry.blobRequests.count
        let again = reader.files(wanted)
        #expect(bench.registry.blobRequests.count == requests)
        #expect(wanted.allSatisfy { (try? again[$0.content]?.get().data) == kernels.layer.files[kernels.pathOf($0)] })
        // Committed to the store meanwhile: read from there, checked again, still no request.
        memory.commit()
        #expect(memory.heldBytes == 0)
        let stored = reader.files(wanted)
        #expect(bench.registry.blobRequests.count == requests)
        #expect(wanted.allSatisfy { (try? stored[$0.content]?.get().data) == kernels.layer.files[kernels.pathOf($0)] })
    }

    @Test func anOnDemandReadJoinsTheBackgroundFetchOfItsFileAndIsNotHeldForOthers() throws {
        let reader = try bench.reader()
        let gate = InMemoryRegistry.Gate()
        let binary = files["KEY1/add.cubin"]!
        let other = files["KEY2/add.cubin"]!
        bench.registry.inject { [first = binary.region.offset] in $0.range?.lowerBound == first ? .hold(gate) : nil }
        let background = DispatchGroup()
        spawn(in: background) { _ = reader.files([binary], priority: .background) }
        #expect(eventually { gate.held == 1 })
        // Another file is fetched at once, the background request still parked.
        #expect(try reader.files([other])[other.content]!.get().data == kernels.layer.files["KEY2/add.cubin"])
        #expect(bench.registry.requests.count == 2)
        // The parked file is joined, not fetched again: no request, and the bytes once the background's land.
        let served = Counter()
        let joined = DispatchGroup()
        let expected = kernels.layer.files["KEY1/add.cubin"]
        spawn(in: joined) {
            if (try? reader.files([binary])[binary.content]?.get().data) == expected { served.increment() }
        }
        #expect(eventually { reader.waiting == 1 })
        #expect(bench.registry.requests.count == 2)
        gate.open()
        joined.wait()
        background.wait()
        #expect(served.count == 1)
        #expect(bench.registry.requests.count == 2)
        #expect(reader.inFlight == 0)
    }

    @Test func aBackgroundReadLeavesOutWhatOnDemandReadsAreFetching() throws {
        let reader = try bench.reader()
        let gate = InMemoryRegistry.Gate()
        bench.registry.inject { _ in .hold(gate) }
        let wanted = directory("KEY2")
        let onDemand = DispatchGroup()
        spawn(in: onDemand) { _ = reader.files(wanted) }
        #expect(eventually { reader.inFlight == wanted.count && gate.held > 0 })
        bench.registry.clearFaults()
        let read = reader.files(wanted + directory("KEY1"), priority: .background)
        #expect(Set(read.keys) == Set(directory("KEY1").map(\.content)))
        gate.open()
        onDemand.wait()
        #expect(reader.inFlight == 0)
    }

    @Test func aFileOfSeveralMembersIsStreamedIntoTheStoreVerified() throws {
        let big = noise(300 << 10, seed: 99)
        let layer = try EStargzLayer(
            files: ["KEY/big.cubin": big, "KEY/add.json": Data("{}".utf8)], chunkSize: 64 << 10)
        let bench = try FetchBench([layer])
        let file = try remoteFiles(of: layer)["KEY/big.cubin"]!
        #expect(file.chunks.count == 5)
        #expect(!file.isSingleMember)
        let path = try bench.reader().store(file, in: bench.store)
        #expect(FileManager.default.contents(atPath: path) == big)
        #expect(bench.registry.blobRequests.count == 5)
    }

    @Test func aCorruptedChunkStoresNothing() throws {
        let big = noise(300 << 10, seed: 7)
        let layer = try EStargzLayer(files: ["KEY/big.cubin": big], chunkSize: 64 << 10)
        let bench = try FetchBench([layer])
        let file = try remoteFiles(of: layer)["KEY/big.cubin"]!
        let third = file.chunks[2].offset
        bench.registry.inject { $0.range?.lowerBound == third ? .corrupt : nil }
        #expect(throws: (any Error).self) { try bench.reader().store(file, in: bench.store) }
        #expect(!bench.store.contains(file.content))
        #expect(try FileManager.default.contentsOfDirectory(atPath: bench.directory.path + "/blobs/sha256").isEmpty)
    }
}

extension KernelLayer {
    /// The path of a file of this layer.
    func pathOf(_ file: RemoteFile) -> String {
        layer.files.first { SHA256Hasher.digest($0.value) == file.content }!.key
    }
}
