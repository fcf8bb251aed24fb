import BlobCache
import TestSupport
import Testing

@Suite struct CacheDirectoryTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var explicit: String?
        var environment: [String: String]
        var uid: UInt32
        var home: String?
        var expected: String?
        var testDescription: String {
            "explicit=\(explicit ?? "-") env=\(environment) uid=\(uid) -> \(expected ?? "nil")"
        }
    }

    static let cases: [Case] = [
        // root: the system location, unless overridden.
        Case(explicit: nil, environment: ["HOME": "/root"], uid: 0, expected: "/var/lib/mcvfs"),
        Case(explicit: nil, environment: ["XDG_CACHE_HOME": "/root/.xdg"], uid: 0, expected: "/var/lib/mcvfs"),
        Case(explicit: nil, environment: ["MCVFS_CACHE_DIR": "/srv/cache"], uid: 0, expected: "/srv/cache"),
        Case(explicit: "/mnt/c", environment: ["MCVFS_CACHE_DIR": "/srv/cache"], uid: 0, expected: "/mnt/c"),
        // users: XDG, then HOME, then the password database.
        Case(
            explicit: nil, environment: ["HOME": "/home/u", "XDG_CACHE_HOME": "/xdg"], uid: 1000, expected: "/xdg/mcvfs"
        ),
        Case(explicit: nil, environment: ["HOME": "/home/u"], uid: 1000, expected: "/home/u/.cache/mcvfs"),
        Case(
            explicit: nil, environment: ["HOME": "/home/u", "XDG_CACHE_HOME": "rel"], uid: 1000,
            expected: "/home/u/.cache/mcvfs"),  // relative XDG values are invalid per the spec
        Case(
            explicit: nil, environment: ["HOME": "/home/u", "XDG_CACHE_HOME": ""], uid: 1000,
            expected: "/home/u/.cache/mcvfs"),
        Case(explicit: nil, environment: [:], uid: 1000, home: "/home/pw", expected: "/home/pw/.cache/mcvfs"),
        Case(explicit: nil, environment: [:], uid: 1000, expected: nil),
        // explicit > env > default; empty values do not count; relative ones are made absolute.
        Case(explicit: nil, environment: ["MCVFS_CACHE_DIR": "/env", "HOME": "/home/u"], uid: 1000, expected: "/env"),
        Case(explicit: "/cli", environment: ["MCVFS_CACHE_DIR": "/env"], uid: 1000, expected: "/cli"),
        Case(explicit: "", environment: ["MCVFS_CACHE_DIR": "/env"], uid: 1000, expected: "/env"),
        Case(
            explicit: nil, environment: ["MCVFS_CACHE_DIR": "", "HOME": "/h"], uid: 1000, expected: "/h/.cache/mcvfs"),
        Case(explicit: "rel/c", environment: [:], uid: 1000, expected: "/work/dir/rel/c"),
    ]

    @Test(arguments: cases) func resolves(_ c: Case) {
        let resolved = CacheDirectory.resolve(
            explicit: c.explicit, environment: c.environment, uid: c.uid, homeDirectory: c.home,
            currentDirectory: "/work/dir")
        #expect(resolved == c.expected)
    }
}
