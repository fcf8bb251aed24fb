import OCI
import Testing

@Suite struct AuthChallengeTests {
    @Test func bearer() {
        let challenges = AuthChallenge.parse(
            #"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#
        )
        #expect(challenges.count == 1)
        let c = challenges[0]
        #expect(c.isBearer)
        #expect(c.realm == "https://auth.docker.io/token")
        #expect(c.service == "registry.docker.io")
        #expect(c.scope == "repository:library/ubuntu:pull")
    }

    @Test func severalChallengesAndOddSpacing() {
        let challenges = AuthChallenge.parse(
            #"Basic realm="Registry Realm" , BEARER realm=https://a.example/t, service = "s,with,commas", error="invalid_token""#
        )
        #expect(challenges.map(\.scheme) == ["basic", "bearer"])
        #expect(challenges[0].realm == "Registry Realm")
        #expect(challenges[1].realm == "https://a.example/t")
        #expect(challenges[1].service == "s,with,commas")
        #expect(challenges[1].error == "invalid_token")
    }

    @Test func escapesAndToken68() {
        let challenges = AuthChallenge.parse(#"Bearer realm="a \"quoted\" realm", Negotiate dG9rZW4=="#)
        #expect(challenges.count == 2)
        #expect(challenges[0].realm == #"a "quoted" realm"#)
        #expect(challenges[1].scheme == "negotiate")
        #expect(challenges[1].token == "dG9rZW4==")
    }

    @Test func preferredPicksBearerAcrossHeaders() {
        let chosen = AuthChallenge.preferred(in: [#"Basic realm="r""#, #"Bearer realm="https://t.example""#])
        #expect(chosen?.isBearer == true)
        #expect(AuthChallenge.preferred(in: []) == nil)
        #expect(AuthChallenge.parse("").isEmpty)
        #expect(AuthChallenge.parse("Basic").first == AuthChallenge(scheme: "Basic"))
    }
}
