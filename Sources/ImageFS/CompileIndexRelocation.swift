import Foundation

/// The rule that moves the paths of vLLM's `vllm_compile_cache.py` under the consumer root, as one left-to-right pass
/// over the bytes (docs/relocation.md).
///
/// A string literal opened by `q` (`'` or `"`) whose content starts with `/` and holds `/torch_compile_cache/`
/// somewhere after that first byte, closed by the same `q` before any other quote or newline, becomes
/// `q<root>/torch_compile_cache/<rest>q`, cut at the first such marker. Anything else is copied as it is, and the
/// scan goes on from the byte after the unmatched quote. This is exactly what the regular expression
/// `(['"])/[^'"\n]*?/(torch_compile_cache/[^'"\n]*)\1` replaced with `$1<root>/$2$1` did, but that expression
/// backtracked quadratically on a long literal closed by the other quote (12 s of daemon CPU per `stat` of a
/// 400 KB file); this pass looks at each byte a bounded number of times. Bytes, not characters: every byte the
/// rule looks for is ASCII, which never occurs inside a multi-byte UTF-8 sequence.
enum CompileIndexRelocation {
    static let marker = Array("/torch_compile_cache/".utf8)
    static let singleQuote = UInt8(ascii: "'")
    static let doubleQuote = UInt8(ascii: "\"")
    static let newline = UInt8(ascii: "\n")
    static let slash = UInt8(ascii: "/")

    /// Relocates `input` under `base` (the consumer root without a trailing `/`).
    /// - Parameters:
    ///   - limit: the most bytes the result may have; past it the scan stops with `.overLimit`.
    ///   - examined: grows by the number of byte comparisons made (at most `3 + marker.count` per input byte).
    static func relocate(_ input: [UInt8], base: [UInt8], limit: Int, examined: inout Int) -> Relocation.Outcome {
        var output: [UInt8] = []
        output.reserveCapacity(min(input.count, limit))
        let replacement = base + [slash]
        var changed = false
        var index = 0
        while index < input.count {
            let quote = input[index]
            examined += 1
            guard quote == singleQuote || quote == doubleQuote else {
                output.append(quote)
                index += 1
                continue
            }
            // The literal's content runs to the first quote or newline: `[^'"\n]` stops there in both parts of the
            // expression, so a match closes exactly there or not at all.
            var end = index + 1
            while end < input.count, !isStop(input[end]) { end += 1 }
            examined += end - index
            guard end < input.count, input[end] == quote, end > index + 1, input[index + 1] == slash,
                let cut = firstMarker(in: input, from: index + 2, to: end, examined: &examined)
            else {
                // Unmatched: the quote stays, and the next attempt starts right after it (the expression's did).
                output.append(quote)
                index += 1
                continue
            }
            // `cut` is the marker's `/`: everything before and including it becomes `base/`.
            output.append(quote)
            output.append(contentsOf: replacement)
            output.append(contentsOf: input[(cut + 1)..<end])
            output.append(quote)
            if !input[(index + 1)...cut].elementsEqual(replacement) { changed = true }
            if output.count > limit { return .overLimit }
            index = end + 1
        }
        return changed ? .rewritten(Data(output)) : .unchanged
    }

    static func isStop(_ byte: UInt8) -> Bool {
        byte == singleQuote || byte == doubleQuote || byte == newline
    }

    /// The first position in `from..<to` where `marker` starts and ends before `to` (the lazy `*?` takes the first).
    static func firstMarker(in input: [UInt8], from start: Int, to end: Int, examined: inout Int) -> Int? {
        var position = start
        while position + marker.count <= end {
            var matched = 0
            while matched < marker.count, input[position + matched] == marker[matched] { matched += 1 }
            examined += matched + 1
            if matched == marker.count { return position }
            position += 1
        }
        return nil
    }
}
