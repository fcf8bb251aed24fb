/// The overlay's inode table: what each inode number the kernel holds stands for, and how many lookups the kernel
/// holds on it (libfuse `passthrough_hp.cc` `do_lookup`/`forget_one`, go-fuse `fs/inode.go`).
///
/// Every reply that hands the kernel an inode (lookup, create, mkdir, symlink, link) adds one lookup; `forget`
/// takes them back. An inode lives while the kernel holds a lookup on it or while a live inode names it as parent,
/// so the table holds what the kernel holds, not everything ever created. A name looked up after its inode was
/// forgotten gets a fresh entry.
///
/// An inode never changes what it stands for: a rename changes its name, an unlink removes the name but leaves the
/// inode (still open somewhere, or not yet forgotten) until its lookups drop to zero. Names are linked to their
/// parent inode, not stored as paths, so renaming a directory moves everything below it at no cost.
///
/// A plain value: `OverlayFileSystem` keeps it in a `Mutex` and tests drive it directly.
struct OverlayInodes {
    /// The upper an entry lives in: one per uid, or one for everyone in a shared overlay.
    typealias Space = UInt32

    /// What an inode is.
    enum Kind: Hashable {
        /// A directory with a part in the image: the same directory for every caller (what it lists depends on
        /// who asks). It keeps the image tree's inode number.
        case directory
        /// A directory that exists only in one upper.
        case upperDirectory(Space)
        /// A file or symlink of the image, by its tree inode (which is also its number).
        case lowerFile
        /// A file or symlink in one upper.
        case upperFile(Space)

        /// The upper it lives in; nil for what the image provides.
        var space: Space? {
            switch self {
            case .directory, .lowerFile: return nil
            case .upperDirectory(let space), .upperFile(let space): return space
            }
        }
    }

    /// A name in a directory, as seen from one upper (nil: as seen by everyone, for directories of the image).
    struct Name: Hashable {
        var parent: UInt64
        var name: String
        var space: Space?
    }

    /// What a lookup found, before it has a number.
    enum Identity: Hashable {
        /// A named entry; `preferred` is the number to use when it has none (a tree directory's own inode).
        case named(Name, Kind, preferred: UInt64?)
        /// An image file, by tree inode.
        case lowerFile(UInt64)
    }

    struct Inode: Equatable {
        var kind: Kind
        /// Its name; nil once unlinked (and for image files, which are found by tree inode).
        var name: Name?
        /// Further names of a hard-linked upper file (kept apart: almost every inode has one name, and an array
        /// per inode would cost an allocation each).
        var links: [Name] = []
        /// Lookups the kernel holds.
        var lookups: UInt64 = 0
        /// Names of live inodes that have this one as parent: a directory stays while anything below it does.
        var children = 0
        /// For an image file one caller renamed: the upper inode that stands for it in that caller's view (the
        /// kernel moved its name onto this inode, and keeps it a while).
        var aliases: [Space: UInt64] = [:]
        /// Aliases naming this inode: it stays while an image file's inode points here.
        var aliased = 0

        var isHeld: Bool { lookups > 0 || children > 0 || aliased > 0 }

        var names: [Name] { (name.map { [$0] } ?? []) + links }

        mutating func add(_ new: Name) {
            if name == nil { name = new } else { links.append(new) }
        }

        mutating func remove(_ old: Name) {
            if name == old { name = links.isEmpty ? nil : links.removeFirst() } else { links.removeAll { $0 == old } }
        }

        mutating func replace(_ old: Name, with new: Name) {
            if name == old {
                name = new
            } else if let index = links.firstIndex(of: old) {
                links[index] = new
            }
        }
    }

    static let rootIno: UInt64 = 1
    /// Numbers for inodes that are not in the image tree start far above any tree inode.
    static let firstDynamicIno: UInt64 = 1 << 40

    private(set) var inodes: [UInt64: Inode] = [:]
    private var byName: [Name: UInt64] = [:]
    private var next = firstDynamicIno
    /// Capacity the dictionaries last grew to: they never shrink by themselves.
    private var highWater = 0
    /// How often the storage was rebuilt smaller (the owner then hands the freed memory back).
    private(set) var compactions = 0

    /// Live inodes (the root not counted: it is never forgotten).
    var count: Int { inodes.count }

    /// Entries the table's storage holds room for.
    var storageCapacity: Int { inodes.capacity + byName.capacity }

    func inode(_ ino: UInt64) -> Inode? { inodes[ino] }

    /// The inode a lookup found, with one more kernel lookup held on it.
    @discardableResult
    mutating func lookedUp(_ identity: Identity) -> UInt64 {
        let ino = number(for: identity)
        inodes[ino]!.lookups += 1
        return ino
    }

    /// The number `identity` has, or would get if it has none yet, without creating an entry (listings hand the
    /// kernel no inode); nil for an upper entry without one.
    func peek(_ identity: Identity) -> UInt64? {
        switch identity {
        case .named(let name, _, let preferred): return byName[name] ?? preferred
        case .lowerFile(let treeIno): return treeIno
        }
    }

    /// The kernel dropped `count` lookups; the inode goes when none are left and nothing below it lives.
    /// - Returns: whether the inode was removed.
    @discardableResult
    mutating func forget(_ ino: UInt64, count: UInt64) -> Bool {
        guard var inode = inodes[ino] else { return false }
        // More forgets than lookups would be a counting bug here, never something the kernel does.
        assert(count <= inode.lookups, "forget(\(ino), \(count)) with \(inode.lookups) lookups")
        inode.lookups -= min(count, inode.lookups)
        inodes[ino] = inode
        return release(ino)
    }

    /// A name stops naming what it named (unlink, rmdir, or the target of a rename): later lookups of it find
    /// something new. The inode itself stays until the kernel forgets it.
    mutating func unbind(_ name: Name) {
        guard let ino = byName.removeValue(forKey: name) else { return }
        inodes[ino]?.remove(name)
        dropChild(of: name.parent)
        release(ino)
    }

    /// Adds a name to an existing inode (a hard link), replacing what the name named.
    mutating func bind(_ name: Name, to ino: UInt64) {
        guard inodes[ino] != nil, byName[name] != ino else { return }
        addChild(to: name.parent)  // first: unbinding the old entry must not release the parent
        unbind(name)
        byName[name] = ino
        inodes[ino]!.add(name)
    }

    /// `from` is renamed to `to`: whatever `to` named is unbound, and what `from` named (with everything below it,
    /// which hangs off its inode) now answers to `to`.
    mutating func rename(_ from: Name, to: Name) {
        guard let ino = byName[from] else {
            unbind(to)
            return
        }
        guard byName[to] != ino else { return }  // two names of one file: rename(2) does nothing
        addChild(to: to.parent)
        unbind(to)
        byName.removeValue(forKey: from)
        byName[to] = ino
        inodes[ino]!.replace(from, with: to)
        dropChild(of: from.parent)
    }

    /// For `space`, image file `ino` now stands for the upper file `name` (it was renamed there). The upper inode is
    /// created if it has none and lives as long as the image file's does.
    mutating func alias(_ ino: UInt64, in space: Space, to name: Name) {
        guard inodes[ino]?.kind == .lowerFile else { return }
        let target = number(for: .named(name, .upperFile(space), preferred: nil))
        if let old = inodes[ino]!.aliases.updateValue(target, forKey: space) {
            inodes[old]?.aliased -= 1
            release(old)
        }
        inodes[target]!.aliased += 1
    }

    /// The upper inode image file `ino` stands for in `space`, if that caller renamed it.
    func alias(of ino: UInt64, in space: Space) -> UInt64? { inodes[ino]?.aliases[space] }

    /// The inode of a directory of the image by its path, if the kernel holds it (and so may cache names in it).
    func sharedDirectory(_ path: [String]) -> UInt64? {
        var current = Self.rootIno
        for component in path {
            guard let next = byName[Name(parent: current, name: component, space: nil)] else { return nil }
            current = next
        }
        return current
    }

    /// The chain of names from the root down to `ino` (first names, for hard links); nil when some inode on the
    /// way is unlinked. Empty for the root.
    func names(of ino: UInt64) -> [Name]? {
        var chain: [Name] = []
        var current = ino
        while current != Self.rootIno {
            guard let name = inodes[current]?.name else { return nil }
            chain.append(name)
            current = name.parent
        }
        return chain.reversed()
    }

    /// The first name `ino` has in `space`'s view (a hard-linked upper file may have several).
    func name(of ino: UInt64, in space: Space?) -> Name? {
        guard let inode = inodes[ino] else { return nil }
        if let name = inode.name, name.space == nil || name.space == space { return name }
        return inode.links.first { $0.space == nil || $0.space == space }
    }

    // MARK: Internals

    private mutating func number(for identity: Identity) -> UInt64 {
        switch identity {
        case .lowerFile(let treeIno):
            if inodes[treeIno] == nil { insert(Inode(kind: .lowerFile), at: treeIno) }
            return treeIno
        case .named(let name, let kind, let preferred):
            if let ino = byName[name] { return ino }
            let ino: UInt64
            if let preferred, inodes[preferred] == nil {
                ino = preferred
            } else {
                ino = next
                next += 1
            }
            insert(Inode(kind: kind), at: ino)
            bind(name, to: ino)
            return ino
        }
    }

    private mutating func insert(_ inode: Inode, at ino: UInt64) {
        inodes[ino] = inode
        highWater = max(highWater, inodes.capacity)
    }

    private mutating func addChild(to parent: UInt64) {
        if parent != Self.rootIno { inodes[parent]?.children += 1 }
    }

    private mutating func dropChild(of parent: UInt64) {
        guard parent != Self.rootIno, inodes[parent] != nil else { return }
        inodes[parent]!.children -= 1
        release(parent)
    }

    /// Removes `ino` if nothing holds it any more, then its parents (and an alias's target) in turn.
    @discardableResult
    private mutating func release(_ ino: UInt64) -> Bool {
        var pending = [ino]
        var removedFirst = false
        while let current = pending.popLast() {
            guard let inode = inodes[current], !inode.isHeld else { continue }
            inodes.removeValue(forKey: current)
            if current == ino { removedFirst = true }
            if let name = inode.name { drop(name, of: current, then: &pending) }
            for name in inode.links { drop(name, of: current, then: &pending) }
            for target in inode.aliases.values where inodes[target] != nil {
                inodes[target]!.aliased -= 1
                pending.append(target)
            }
        }
        compactIfSparse()
        return removedFirst
    }

    /// Forgets the name of a removed inode; its parent may go next.
    private mutating func drop(_ name: Name, of ino: UInt64, then pending: inout [UInt64]) {
        guard byName[name] == ino else { return }
        byName.removeValue(forKey: name)
        guard name.parent != Self.rootIno, inodes[name.parent] != nil else { return }
        inodes[name.parent]!.children -= 1
        pending.append(name.parent)
    }

    /// Swift dictionaries keep their storage when emptied: after a burst (the kernel forgetting a hundred
    /// thousand inodes at once) the table would keep its peak size forever. Rebuild once it is a quarter full.
    private mutating func compactIfSparse() {
        guard highWater > 4096, inodes.count * 4 < highWater else { return }
        inodes = Dictionary(uniqueKeysWithValues: inodes.map { ($0.key, $0.value) })
        byName = Dictionary(uniqueKeysWithValues: byName.map { ($0.key, $0.value) })
        highWater = inodes.capacity
        compactions += 1
    }
}
