//! The `Content-Type` of an embedded file, by extension. Shared with `build.rs`, which
//! records it in the asset table, so the choice is made once at build time.

/// The media type served for `path` (only its extension matters).
#[must_use]
pub fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map_or("", |(_, ext)| ext);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "wasm" => "application/wasm",
        // Unknown types are never sniffed (`nosniff`), so an opaque type is the safe one.
        _ => "application/octet-stream",
    }
}

/// Whether compressing a file of this type can pay off; images like PNG and fonts like
/// WOFF2 are compressed already.
#[must_use]
pub fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/manifest+json")
        || content_type.starts_with("image/svg+xml")
        || content_type.starts_with("image/x-icon")
        || content_type.starts_with("application/wasm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_by_extension() {
        let cases = [
            ("index.html", "text/html; charset=utf-8"),
            ("assets/index-1a2b.js", "text/javascript; charset=utf-8"),
            ("sw.js", "text/javascript; charset=utf-8"),
            ("assets/index-1a2b.css", "text/css; charset=utf-8"),
            ("manifest.webmanifest", "application/manifest+json"),
            ("data.json", "application/json"),
            ("icon.svg", "image/svg+xml"),
            ("icon-192.PNG", "image/png"),
            ("favicon.ico", "image/x-icon"),
            ("robots.txt", "text/plain; charset=utf-8"),
            ("assets/inter-1a2b.woff2", "font/woff2"),
            ("LICENSE", "application/octet-stream"),
            ("dir.d/file", "application/octet-stream"),
        ];
        for (path, expected) in cases {
            assert_eq!(content_type(path), expected, "{path}");
        }
        assert!(compressible(content_type("a.js")));
        assert!(compressible(content_type("a.svg")));
        assert!(!compressible(content_type("a.png")));
        assert!(!compressible(content_type("a.woff2")));
    }
}
