import Foundation

/// Finds credentials for a registry the way podman and docker do.
///
/// Files, first match wins: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`). In each file: `credHelpers[host]`,
/// then `auths` (most specific `host/namespace/repo` key first; `auth` base64 `user:pass` or
/// `username`/`password`), then `credsStore`. Helpers run as `docker-credential-<name> get` with the
/// host on stdin and answer `{"Username","Secret"}`.
public struct CredentialStore: Sendable {
    /// Where the store looks: the process environment by default, a temp dir in tests.
    public struct Environment: Sendable {
        public var variables: [String: String]
        public var homeDirectory: String?

        public init(variables: [String: String], homeDirectory: String?) {
            self.variables = variables
            self.homeDirectory = homeDirectory
        }

        public static var process: Environment {
            let variables = ProcessInfo.processInfo.environment
            return Environment(variables: variables, homeDirectory: variables["HOME"] ?? NSHomeDirectory())
        }
    }

    public var environment: Environment

    public init(environment: Environment = .process) { self.environment = environment }

    /// The auth files consulted, in order (whether or not they exist).
    public var authFiles: [String] {
        var files: [String] = []
        let env = environment.variables
        if let file = env["REGISTRY_AUTH_FILE"], !file.isEmpty { files.append(file) }
        if let runtime = env["XDG_RUNTIME_DIR"], !runtime.isEmpty { files.append(runtime + "/containers/auth.json") }
        if let dir = env["DOCKER_CONFIG"], !dir.isEmpty {
            files.append(dir + "/config.json")
        } else if let home = environment.homeDirectory {
            files.append(home + "/.docker/config.json")
        }
        return files
    }

    /// Credentials for `registry` (`host[:port]`), optionally for one `repository` inside it.
    ///
    /// - Returns: `nil` when no file or helper knows the registry (anonymous access).
    /// - Throws: `RegistryError.credentials` for an unreadable file or a failing helper.
    public func credentials(for registry: String, repository: String? = nil) throws(RegistryError) -> Credentials? {
        for path in authFiles {
            guard FileManager.default.fileExists(atPath: path) else { continue }
            if let found = try lookup(in: path, registry: registry, repository: repository) { return found }
        }
        return nil
    }

    /// `--creds` when given, else the files and helpers.
    public func resolve(explicit: String?, registry: String, repository: String? = nil) throws(RegistryError)
        -> Credentials?
    {
        if let explicit { return try Credentials(parsing: explicit) }
        return try credentials(for: registry, repository: repository)
    }

    private struct AuthFile: Decodable {
        struct Entry: Decodable {
            var auth: String?
            var username: String?
            var password: String?
            var identitytoken: String?
        }
        var auths: [String: Entry]?
        var credHelpers: [String: String]?
        var credsStore: String?
    }

    private func lookup(in path: String, registry: String, repository: String?) throws(RegistryError) -> Credentials? {
        let file: AuthFile
        do {
            file = try JSONDecoder().decode(AuthFile.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw .credentials("\(path): \(error)")
        }
        let host = Self.normalise(registry)
        for (key, helper) in file.credHelpers ?? [:] where Self.normalise(key) == host {
            if let found = try runHelper(helper, serverURL: Self.helperServerURL(for: registry)) { return found }
        }
        // Keys name a host or a host/namespace prefix; the longest prefix of host/repository wins.
        var candidates = [host]
        if let repository {
            var prefix = host
            for component in repository.split(separator: "/") {
                prefix += "/" + component
                candidates.insert(prefix, at: 0)
            }
        }
        let auths = (file.auths ?? [:]).map { (key: Self.normalise($0.key), entry: $0.value) }
        for candidate in candidates {
            for (key, entry) in auths where key == candidate {
                if let found = try Self.decode(entry, key: candidate, path: path) { return found }
            }
        }
        if let store = file.credsStore, !store.isEmpty {
            return try runHelper(store, serverURL: Self.helperServerURL(for: registry))
        }
        return nil
    }

    private static func decode(_ entry: AuthFile.Entry, key: String, path: String) throws(RegistryError) -> Credentials?
    {
        if let token = entry.identitytoken, !token.isEmpty { return Credentials(identityToken: token) }
        if let auth = entry.auth, !auth.isEmpty {
            guard let data = Data(base64Encoded: auth.trimmingCharacters(in: .whitespacesAndNewlines)),
                let text = String(data: data, encoding: .utf8)
            else { throw .credentials("\(path): 'auth' for \(key) is not base64 of user:password") }
            do { return try Credentials(parsing: text) } catch {
                throw .credentials("\(path): 'auth' for \(key): \(error)")
            }
        }
        if let username = entry.username, let password = entry.password {
            return Credentials(username: username, password: password)
        }
        return nil
    }

    static let dockerHubAliases: Set<String> = ["docker.io", "index.docker.io", "registry-1.docker.io"]

    /// `https://index.docker.io/v1/` → `docker.io`; `HOST:5000/` → `host:5000`; `host/ns/repo` stays.
    static func normalise(_ key: String) -> String {
        var text = key.trimmingCharacters(in: .whitespaces)
        var hadScheme = false
        for scheme in ["https://", "http://"] where text.lowercased().hasPrefix(scheme) {
            text.removeFirst(scheme.count)
            hadScheme = true
        }
        // A URL-form key (legacy docker) names a host; its path (/v1/, /v2/) is not a repository.
        if hadScheme, let slash = text.firstIndex(of: "/") { text = String(text[..<slash]) }
        while text.hasSuffix("/") { text.removeLast() }
        var parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard !parts.isEmpty else { return "" }
        parts[0] = parts[0].lowercased()
        if dockerHubAliases.contains(parts[0]) { parts[0] = "docker.io" }
        return parts.joined(separator: "/")
    }

    /// Docker's helpers store Hub credentials under the legacy URL.
    static func helperServerURL(for registry: String) -> String {
        normalise(registry) == "docker.io" ? "https://index.docker.io/v1/" : registry
    }

    private func runHelper(_ name: String, serverURL: String) throws(RegistryError) -> Credentials? {
        let program = "docker-credential-" + name
        guard let executable = findExecutable(program) else {
            throw .credentials("credential helper \(program) not found in PATH")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["get"]
        process.environment = environment.variables
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        let output: Data
        do {
            try process.run()
            stdin.fileHandleForWriting.write(Data((serverURL + "\n").utf8))
            try stdin.fileHandleForWriting.close()
            output = stdout.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
        } catch {
            throw .credentials("\(program) get: \(error)")
        }
        let message = String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if process.terminationStatus != 0 {
            // The helper protocol's way of saying "no entry": not an error, just no credentials.
            if message.lowercased().contains("credentials not found") { return nil }
            let errText = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw .credentials(
                "\(program) get exited \(process.terminationStatus): \(message.isEmpty ? errText : message)")
        }
        struct Answer: Decodable {
            var username: String
            var secret: String
            enum CodingKeys: String, CodingKey {
                case username = "Username"
                case secret = "Secret"
            }
        }
        guard let answer = try? JSONDecoder().decode(Answer.self, from: output) else {
            throw .credentials("\(program) get answered something that is not {\"Username\",\"Secret\"}")
        }
        // The helper protocol marks an OAuth2 refresh token with this username.
        if answer.username == "<token>" { return Credentials(identityToken: answer.secret) }
        return Credentials(username: answer.username, password: answer.secret)
    }

    private func findExecutable(_ program: String) -> String? {
        let path = environment.variables["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
