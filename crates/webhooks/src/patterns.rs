//! Which event types an endpoint subscribes to: exact names and `prefix.*` wildcards.

/// Whether `event_type` matches any of `patterns`; no patterns means every type.
pub fn subscribes(patterns: &[String], event_type: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|pattern| matches(pattern, event_type))
}

/// `video.*` matches `video.created` and `video.asset.ready`, not `video` itself; `*`
/// matches everything.
pub fn matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') => event_type.starts_with(prefix) && event_type.len() > prefix.len(),
        _ => pattern == event_type,
    }
}

/// Whether `pattern` is well formed: an event type name, optionally ending in `.*`, or `*`.
pub fn is_valid_pattern(pattern: &str) -> bool {
    let name = match pattern.strip_suffix(".*") {
        Some(prefix) => prefix,
        None if pattern == "*" => return true,
        None => pattern,
    };
    !name.is_empty()
        && name.len() <= 128
        && name.split('.').all(|segment| {
            !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_whole_segments_below_their_prefix() {
        assert!(matches("video.*", "video.created"));
        assert!(matches("video.*", "video.asset.ready"));
        assert!(!matches("video.*", "video"));
        assert!(!matches("video.*", "videos.created"));
        assert!(matches("*", "anything.at.all"));
        assert!(matches("user.created", "user.created"));
        assert!(!matches("user.created", "user.created.v2"));
        assert!(subscribes(&[], "x"));
        assert!(subscribes(&["a.b".into(), "c.*".into()], "c.d"));
        assert!(!subscribes(&["a.b".into()], "a.c"));
    }

    #[test]
    fn patterns_are_names_with_an_optional_trailing_wildcard() {
        for good in ["user.created", "video.*", "*", "a_b-c.d"] {
            assert!(is_valid_pattern(good), "{good}");
        }
        for bad in ["", "video.", "vid*eo", "*.created", "a..b", "a.*.b", ".*", "sp ace"] {
            assert!(!is_valid_pattern(bad), "{bad}");
        }
    }
}
