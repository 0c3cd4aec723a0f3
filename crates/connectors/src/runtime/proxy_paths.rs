//! What the proxy does to paths on the way in and links on the way out.
//!
//! In: the caller's path is sent as the caller encoded it (the provider decides what its
//! escapes mean), so a dot segment hidden in an escape (`..%2f`, `%2e%2e`, `..%5c`, `%252f`)
//! would pass our check of the path and be undone by the provider into a path outside the
//! connection's base. The path is looked at through every layer of encoding: a dot segment
//! (with `/` or `\` as the separator) or a backslash at any layer is refused. An encoded `/`
//! with no dot segment around it cannot leave the base, and providers use it in identifiers
//! (GitLab's `group%2Fproject`), so it passes.
//!
//! Out: a provider's `Link` header (RFC 8288) names its own URLs; those under the connection's
//! base URL are rewritten to the same place through the proxy, so a client can follow
//! `rel="next"` without ever holding the provider's credentials.

use url::Url;

use super::resolve::within_base;

/// Rounds of percent-decoding looked through: `%25252f` is still caught.
const DECODING_ROUNDS: usize = 4;

/// Refuses a proxy path (without its query) that holds a dot segment or a backslash, plainly
/// or behind any number of percent-encodings.
pub fn check_proxy_path(path: &str) -> Result<(), &'static str> {
    let mut current = path.to_string();
    for _ in 0..DECODING_ROUNDS {
        if current.split(['/', '\\']).any(|segment| segment == "." || segment == "..") {
            return Err("must not contain `.` or `..` segments, plain or percent-encoded");
        }
        if current.contains('\\') {
            return Err("must not contain a backslash, plain or percent-encoded");
        }
        let decoded = percent_encoding::percent_decode_str(&current).decode_utf8_lossy().into_owned();
        if decoded == current {
            return Ok(());
        }
        current = decoded;
    }
    Err("is percent-encoded too many times over")
}

/// `Link` header values with every target under `base` pointing through `proxy` (the proxy's
/// own URL for the connection) instead; other targets and every parameter are kept. (A `<`
/// inside a quoted parameter, which no provider we know sends, would be read as a target.)
pub fn rewrite_links(value: &str, base: &Url, proxy: &str) -> String {
    let mut out = String::with_capacity(value.len() + 64);
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>').map(|at| open + at) else { break };
        out.push_str(&rest[..=open]);
        let target = &rest[open + 1..close];
        match base.join(target) {
            Ok(url) if within_base(base, &url) => {
                let under = &url.path()[base.path().trim_end_matches('/').len()..];
                out.push_str(proxy.trim_end_matches('/'));
                out.push_str(under);
                if let Some(query) = url.query() {
                    out.push('?');
                    out.push_str(query);
                }
            }
            _ => out.push_str(target),
        }
        out.push('>');
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_separators_and_dot_segments_are_refused_at_any_depth() {
        for path in [
            "/a/../../admin",
            "/./x",
            "/..%2f..%2fadmin",
            "/..%2F..%2Fadmin",
            "/%2e%2e/admin",
            "/.%2E/admin",
            "/x%5c..%5cadmin",
            "/x\\admin",
            "/..%252f..%252fadmin",
            "/%252e%252e/admin",
            "/%25252e%25252e/x",
        ] {
            assert!(check_proxy_path(path).is_err(), "{path}");
        }
        for path in [
            "/repos/acme/api/issues",
            "/search/a%20b",
            "/files/report.v2.pdf",
            "/%E2%9C%93",
            "/a..b/c",
            "/projects/acme%2Fapi",
        ] {
            assert_eq!(check_proxy_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn links_under_the_base_point_through_the_proxy() {
        let base = Url::parse("https://api.github.com").unwrap();
        let proxy = "https://hub.example/api/integrations/conn_1/proxy";
        let header = r#"<https://api.github.com/user/repos?page=2&per_page=30>; rel="next", <https://api.github.com/user/repos?page=5>; rel="last", <https://docs.github.com/rest>; rel="help""#;
        assert_eq!(
            rewrite_links(header, &base, proxy),
            r#"<https://hub.example/api/integrations/conn_1/proxy/user/repos?page=2&per_page=30>; rel="next", <https://hub.example/api/integrations/conn_1/proxy/user/repos?page=5>; rel="last", <https://docs.github.com/rest>; rel="help""#
        );
        // A base with a path: only what lies under it, relative targets resolved against it.
        let base = Url::parse("https://acme.atlassian.net/rest/api/3").unwrap();
        assert_eq!(
            rewrite_links("</rest/api/3/search?startAt=50>; rel=\"next\", </wiki/x>; rel=\"other\"", &base, proxy),
            "<https://hub.example/api/integrations/conn_1/proxy/search?startAt=50>; rel=\"next\", </wiki/x>; rel=\"other\""
        );
    }
}
