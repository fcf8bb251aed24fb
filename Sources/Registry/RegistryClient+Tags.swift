import Foundation

extension RegistryClient {
    /// Pages are followed at most this many times, so a registry that keeps answering `next` cannot loop us.
    static let maxTagPages = 10_000

    /// `GET /v2/<name>/tags/list`, every page (distribution spec, "Listing tags").
    ///
    /// Follows `Link: <...>; rel="next"`; a registry without `Link` that returns a full page is asked again
    /// with `last=<final tag>` until a page comes back short, empty, or without new tags.
    ///
    /// - Parameters:
    ///   - pageSize: `n`, the page size to ask for; `nil` lets the registry choose.
    /// - Returns: All tags, in the registry's order, without duplicates.
    public func listTags(repository: String, pageSize: Int? = nil) throws -> [String] {
        try Self.checkRepository(repository)
        var query: [URLQueryItem] = []
        if let pageSize { query.append(URLQueryItem(name: "n", value: String(pageSize))) }
        var next: URL? = try url("/v2/\(repository)/tags/list", query: query)
        var tags: [String] = []
        var seen = Set<String>()
        var pages = 0
        while let pageURL = next, pages < Self.maxTagPages {
            pages += 1
            let call = Call(method: .get, url: pageURL, scope: Self.scope(repository), timeouts: options.timeouts)
            let response = try fetch(call, limit: options.maxManifestSize)
            struct Page: Decodable { var tags: [String]? }
            let page: Page
            do { page = try JSONDecoder().decode(Page.self, from: response.body) } catch {
                throw RegistryError.invalidResponse("GET \(pageURL.absoluteString): tag list is not JSON: \(error)")
            }
            let pageTags = page.tags ?? []
            let fresh = pageTags.filter { seen.insert($0).inserted }
            tags += fresh
            next = nil
            if let link = Self.nextLink(response.head.headers.values("Link"), relativeTo: response.head.url) {
                next = link
            } else if let pageSize, pageTags.count >= pageSize, !fresh.isEmpty, let last = pageTags.last {
                next = try url(
                    "/v2/\(repository)/tags/list",
                    query: [
                        URLQueryItem(name: "n", value: String(pageSize)), URLQueryItem(name: "last", value: last),
                    ])
            }
            if fresh.isEmpty && !pageTags.isEmpty { next = nil }
        }
        return tags
    }

    /// The `rel="next"` target among RFC 8288 `Link` values, resolved against the page that sent it.
    static func nextLink(_ values: [String], relativeTo base: URL) -> URL? {
        for value in values {
            // Links are comma-separated; a URI in <> may itself contain commas, so split outside <> only.
            var links: [Substring] = []
            var start = value.startIndex
            var inURI = false
            for index in value.indices {
                switch value[index] {
                case "<": inURI = true
                case ">": inURI = false
                case "," where !inURI:
                    links.append(value[start..<index])
                    start = value.index(after: index)
                default: break
                }
            }
            links.append(value[start...])
            for link in links {
                guard let open = link.firstIndex(of: "<"), let close = link[open...].firstIndex(of: ">") else {
                    continue
                }
                let target = String(link[link.index(after: open)..<close])
                let params = link[link.index(after: close)...].split(separator: ";").map {
                    $0.trimmingCharacters(in: .whitespaces).lowercased()
                }
                let isNext = params.contains { param in
                    guard param.hasPrefix("rel=") else { return false }
                    let rel = param.dropFirst(4).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                    return rel.split(separator: " ").contains("next")
                }
                if isNext { return URL(string: target, relativeTo: base)?.absoluteURL }
            }
        }
        return nil
    }
}
