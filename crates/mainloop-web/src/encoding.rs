//! `Accept-Encoding` negotiation between the precompressed forms an asset has: the
//! highest `q` wins, brotli before gzip on a tie, identity when neither is acceptable.

use axum::http::header::{self, HeaderMap};

/// A content coding the server can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
    Identity,
}

/// Picks the coding for a response, given which compressed forms exist.
#[must_use]
pub fn choose(headers: &HeaderMap, has_brotli: bool, has_gzip: bool) -> Coding {
    let (mut br, mut gzip, mut any) = (None, None, None);
    let values = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok());
    for item in values.flat_map(|v| v.split(',')) {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            // An unreadable weight counts as a refusal rather than a guess.
            .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
        match name.as_str() {
            "br" => br = Some(q),
            "gzip" | "x-gzip" => gzip = Some(q),
            "*" => any = Some(q),
            _ => {}
        }
    }
    // A coding not named is acceptable only through `*` (RFC 9110 §12.5.3).
    let br = if has_brotli {
        br.or(any).unwrap_or(0.0)
    } else {
        0.0
    };
    let gzip = if has_gzip {
        gzip.or(any).unwrap_or(0.0)
    } else {
        0.0
    };
    if br > 0.0 && br >= gzip {
        Coding::Brotli
    } else if gzip > 0.0 {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn pick(accept: Option<&'static str>, br: bool, gz: bool) -> Coding {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(a));
        }
        choose(&headers, br, gz)
    }

    #[test]
    fn brotli_then_gzip_then_identity() {
        let browser = Some("gzip, deflate, br, zstd");
        assert_eq!(pick(browser, true, true), Coding::Brotli);
        assert_eq!(pick(browser, false, true), Coding::Gzip);
        assert_eq!(pick(browser, false, false), Coding::Identity);
        assert_eq!(pick(Some("gzip"), true, true), Coding::Gzip);
        assert_eq!(pick(Some("identity"), true, true), Coding::Identity);
        assert_eq!(pick(None, true, true), Coding::Identity);
    }

    #[test]
    fn weights_are_honoured() {
        assert_eq!(pick(Some("br;q=0, gzip"), true, true), Coding::Gzip);
        assert_eq!(
            pick(Some("br; q=0.0, gzip;q=0"), true, true),
            Coding::Identity
        );
        assert_eq!(pick(Some("br;q=0.5, gzip;q=1"), true, true), Coding::Gzip);
        assert_eq!(
            pick(Some("BR;Q=0.9, gzip;q=0.9"), true, true),
            Coding::Brotli
        );
        assert_eq!(pick(Some("*"), true, true), Coding::Brotli);
        assert_eq!(pick(Some("*;q=0, gzip"), true, true), Coding::Gzip);
        assert_eq!(pick(Some("x-gzip"), false, true), Coding::Gzip);
        assert_eq!(pick(Some("br;q=bogus"), true, false), Coding::Identity);
    }
}
