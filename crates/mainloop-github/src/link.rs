//! The `Link` header (RFC 8288) as GitHub uses it for pagination.

/// The target of the `rel="next"` link, if any.
#[must_use]
pub fn next(header: &str) -> Option<String> {
    // A URL may contain commas in its query, so split on "<" rather than ",".
    header.split('<').skip(1).find_map(|part| {
        let (target, params) = part.split_once('>')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.strip_prefix("rel=").is_some_and(|rels| {
                rels.trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r == "next")
            })
        });
        is_next.then(|| target.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_next_among_github_links() {
        let h = r#"<https://api.github.com/repositories/1300192/issues?page=2>; rel="prev", <https://api.github.com/repositories/1300192/issues?page=4>; rel="next", <https://api.github.com/repositories/1300192/issues?page=515>; rel="last", <https://api.github.com/repositories/1300192/issues?page=1>; rel="first""#;
        assert_eq!(
            next(h).as_deref(),
            Some("https://api.github.com/repositories/1300192/issues?page=4")
        );
    }

    #[test]
    fn last_page_has_no_next() {
        let h = r#"<https://api.github.com/x?page=1>; rel="first", <https://api.github.com/x?page=4>; rel="prev""#;
        assert_eq!(next(h), None);
        assert_eq!(next(""), None);
        assert_eq!(next("garbage"), None);
    }

    #[test]
    fn tolerates_commas_in_urls_unquoted_rel_and_multiple_rels() {
        assert_eq!(
            next("<https://h/x?labels=a,b&page=2>; rel=next").as_deref(),
            Some("https://h/x?labels=a,b&page=2")
        );
        assert_eq!(
            next(r#"<https://h/x?page=2>; rel="next last""#).as_deref(),
            Some("https://h/x?page=2")
        );
        assert_eq!(next(r#"<https://h/x?page=2>; rel="nextish""#), None);
    }
}
