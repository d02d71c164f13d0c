//! The rule for a URL the customer pushes to the agent (`SendUrl`, GMS `pushUrl`): both
//! dialects apply it at the edge, so a chat server only ever sees an absolute web address.
//!
//! An agent desktop shows the URL as a link; a `javascript:` or `data:` URL there runs in
//! the agent's session, so only `http` and `https` pass. The rule is written so a JSON
//! Schema `pattern` states it exactly (see [`PUSH_URL_PATTERN`]).

/// Longest pushed URL, in characters (Unicode scalar values, as JSON Schema's `maxLength`
/// counts). Longer than any address a browser sends, far below a message's size limit.
pub const MAX_PUSH_URL_CHARS: usize = 2048;

/// The same rule as an ECMA-262 regular expression, for the OpenAPI document: the scheme
/// `http` or `https` in any case, `://`, a non-empty authority, then optionally a path,
/// query or fragment; no whitespace, control character or byte-order mark anywhere (the
/// mark is named because Python's `\s`, unlike ECMA's, leaves it out).
pub const PUSH_URL_PATTERN: &str = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s\x00-\x1F\x7F-\x9F\uFEFF/?#]+([/?#][^\s\x00-\x1F\x7F-\x9F\uFEFF]*)?$";

/// Why a pushed URL is refused: the text of a field error.
pub fn check_push_url(url: &str) -> Result<(), &'static str> {
    if url.chars().count() > MAX_PUSH_URL_CHARS {
        return Err("must be at most 2048 characters");
    }
    // What ECMA's `\s` and the control ranges of the pattern cover: Unicode White_Space,
    // every control character (C0, DEL, C1) and the byte-order mark.
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\u{feff}')
    {
        return Err("must not contain spaces or control characters");
    }
    let rest = strip_prefix_ignore_case(url, "https://")
        .or_else(|| strip_prefix_ignore_case(url, "http://"))
        .ok_or("must be an absolute http:// or https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err("must name a host after the scheme");
    }
    Ok(())
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[&str] = &[
        "https://example.com",
        "http://example.com/a/b?c=d#e",
        "HTTPS://Example.com:8443/x",
        "https://user@host/",
        "https://[::1]:8080/path",
        "https://bücher.example/ä?q=ü",
        "https://h?",
    ];

    const BAD: &[&str] = &[
        "javascript:alert(1)",
        "JavaScript://example.com/%0Aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "file:///etc/passwd",
        "ftp://example.com",
        "//example.com/x",
        "/relative/path",
        "example.com",
        "https://",
        "https:///path",
        "https://?q",
        "http:example.com",
        " https://example.com",
        "https://example.com/a b",
        "https://example.com/\u{0}",
        "https://example.com/\u{85}",
        "https://example.com/\u{a0}",
        "https://example.com/\u{2028}",
        "https://example.com/\u{3000}",
        "https://example.com/\u{feff}",
        "https://exa\tmple.com",
        "",
    ];

    /// The pattern the OpenAPI document carries says exactly what the code does.
    #[test]
    fn the_pattern_states_the_rule() {
        let pattern = regex::Regex::new(PUSH_URL_PATTERN).unwrap();
        for url in GOOD.iter().chain(BAD) {
            assert_eq!(
                pattern.is_match(url),
                check_push_url(url).is_ok(),
                "{url:?}"
            );
        }
    }

    #[test]
    fn only_absolute_http_and_https_urls_pass() {
        for good in GOOD {
            assert_eq!(check_push_url(good), Ok(()), "{good}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_PUSH_URL_CHARS));
        for bad in BAD.iter().copied().chain([long.as_str()]) {
            assert!(check_push_url(bad).is_err(), "{bad:?} passed");
        }
        let longest = format!("https://e/{}", "é".repeat(MAX_PUSH_URL_CHARS - 10));
        assert_eq!(longest.chars().count(), MAX_PUSH_URL_CHARS);
        assert_eq!(check_push_url(&longest), Ok(()));
    }
}
