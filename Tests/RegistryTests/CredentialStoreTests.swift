import Foundation
import Testing

@testable import Registry

@Suite struct CredentialStoreTests {
    /// A fresh directory with `files` written into it (paths relative to it).
    private func sandbox(_ files: [String: String]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mcvfs-creds-\(UUID().uuidString)")
        for (path, content) in files {
            let url = dir.appendingPathComponent(path)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try content.write(to: url, atomically: true, encoding: .utf8)
        }
        return dir
    }

    private func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    @Test func registryAuthFileComesFirst() throws {
        let dir = try sandbox([
            "auth.json": #"{"auths":{"quay.example":{"auth":"\#(base64("first:one"))"}}}"#,
            "run/containers/auth.json": #"{"auths":{"quay.example":{"auth":"\#(base64("second:two"))"}}}"#,
        ])
        defer { try? FileManager.default.removeItem(at: dir) }
        var store = CredentialStore(
            environment: .init(
                variables: ["REGISTRY_AUTH_FILE": dir.path + "/auth.json", "XDG_RUNTIME_DIR": dir.path + "/run"],
                homeDirectory: dir.path))
        #expect(try store.credentials(for: "quay.example") == Credentials(username: "first", password: "one"))
        store.environment.variables["REGISTRY_AUTH_FILE"] = dir.path + "/missing.json"
        #expect(try store.credentials(for: "quay.example") == Credentials(username: "second", password: "two"))
        #expect(try store.credentials(for: "other.example") == nil)
    }

    @Test func dockerConfigForms() throws {
        let dir = try sandbox([
            ".docker/config.json": """
            {"auths":{
              "https://index.docker.io/v1/":{"auth":"\(base64("hub:pw:with:colons"))"},
              "http://LOCALHOST:5000/":{"username":"local","password":"lpw"},
              "quay.example/team":{"auth":"\(base64("team:tpw"))"},
              "quay.example":{"auth":"\(base64("any:apw"))"},
              "acr.example":{"auth":"\(base64("00000000-0000-0000-0000-000000000000:"))","identitytoken":"rt"}
            }}
            """
        ])
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CredentialStore(environment: .init(variables: [:], homeDirectory: dir.path))
        for alias in ["docker.io", "registry-1.docker.io", "index.docker.io"] {
            #expect(try store.credentials(for: alias) == Credentials(username: "hub", password: "pw:with:colons"))
        }
        #expect(try store.credentials(for: "acr.example") == Credentials(identityToken: "rt"))
        #expect(try store.credentials(for: "localhost:5000") == Credentials(username: "local", password: "lpw"))
        #expect(
            try store.credentials(for: "quay.example", repository: "team/cache")
                == Credentials(username: "team", password: "tpw"))
        #expect(
            try store.credentials(for: "quay.example", repository: "other/cache")
                == Credentials(username: "any", password: "apw"))
    }

    @Test func credentialHelpers() throws {
        // A helper that knows one server, answering the credential-helper protocol.
        let helper = """
            #!/bin/sh
            read server
            if [ "$server" = "ghcr.example" ]; then
              echo '{"ServerURL":"ghcr.example","Username":"helper-user","Secret":"helper-secret"}'
            elif [ "$server" = "token.example" ]; then
              echo '{"Username":"<token>","Secret":"refresh"}'
            elif [ "$server" = "https://index.docker.io/v1/" ]; then
              echo '{"Username":"hub-helper","Secret":"hub-secret"}'
            else
              echo "credentials not found in native keychain"
              exit 1
            fi
            """
        let dir = try sandbox([
            "bin/docker-credential-fake": helper,
            "docker/config.json":
                #"{"credHelpers":{"ghcr.example":"fake"},"credsStore":"fake","auths":{"plain.example":{}}}"#,
        ])
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.setAttributes(
            [.posixPermissions: 0o755], ofItemAtPath: dir.path + "/bin/docker-credential-fake")
        let store = CredentialStore(
            environment: .init(
                variables: ["DOCKER_CONFIG": dir.path + "/docker", "PATH": dir.path + "/bin:/usr/bin:/bin"],
                homeDirectory: nil))
        #expect(
            try store.credentials(for: "ghcr.example")
                == Credentials(username: "helper-user", password: "helper-secret"))
        #expect(try store.credentials(for: "docker.io") == Credentials(username: "hub-helper", password: "hub-secret"))
        #expect(try store.credentials(for: "token.example") == Credentials(identityToken: "refresh"))
        #expect(try store.credentials(for: "unknown.example") == nil)
    }

    @Test func missingHelperIsAnError() throws {
        let dir = try sandbox([".docker/config.json": #"{"credsStore":"does-not-exist"}"#])
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CredentialStore(environment: .init(variables: ["PATH": "/nonexistent"], homeDirectory: dir.path))
        #expect(
            throws: RegistryError.credentials("credential helper docker-credential-does-not-exist not found in PATH")
        ) {
            try store.credentials(for: "x.example")
        }
    }

    @Test func explicitCredentialsWin() throws {
        let store = CredentialStore(environment: .init(variables: [:], homeDirectory: nil))
        #expect(
            try store.resolve(explicit: "me:p:w", registry: "r.example") == Credentials(username: "me", password: "p:w")
        )
        #expect(throws: RegistryError.self) { try store.resolve(explicit: "nocolon", registry: "r.example") }
        #expect(Credentials(username: "me", password: "secret").description == "me:***")
    }

    @Test func keyNormalisation() {
        #expect(CredentialStore.normalise("https://index.docker.io/v1/") == "docker.io")
        #expect(CredentialStore.normalise("Quay.IO") == "quay.io")
        #expect(CredentialStore.normalise("quay.io/Org/Repo/") == "quay.io/Org/Repo")
        #expect(CredentialStore.normalise("https://r.example:5000/v2/") == "r.example:5000")
    }
}
