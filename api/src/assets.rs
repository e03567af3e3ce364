//! The fixed set of files the public listener serves besides the API: the OpenAPI document
//! (`/openapi.json`) and the carousel widget with its demo page (`/widget/...`).
//!
//! They are compiled into the binary (`include_str!`) and looked up by exact path, so no part
//! of a URL ever reaches the filesystem: a path that is not in [`ASSETS`] is the ordinary 404,
//! whatever dots, slashes or encodings it holds.

use std::sync::OnceLock;

use hyper::header::HeaderValue;

/// The OpenAPI 3.1 document of every route, status and header (`api/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");
/// The `<related-items>` custom element.
pub const WIDGET_JS: &str = include_str!("../widget/related-items.js");
/// A page that shows the widget on product 42, served by the API itself.
pub const WIDGET_DEMO: &str = include_str!("../widget/demo.html");

/// How long a browser or CDN may keep an embedded file before revalidating it with its ETag:
/// they change only with a new build, and five minutes bounds how long a deploy takes to reach
/// every storefront.
pub const CACHE_CONTROL: &str = "public, max-age=300";

/// The demo page loads the widget and its data from this server only; inline styles are the
/// widget's own (shadow DOM `<style>`), images come from the catalog's image hosts.
pub const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
img-src https: data:; style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
    /// A Content-Security-Policy for documents (the demo page); none for data and scripts.
    pub csp: Option<&'static str>,
}

/// Every file served, by exact path.
pub const ASSETS: [Asset; 3] = [
    Asset {
        path: "/openapi.json",
        content_type: "application/json",
        body: OPENAPI,
        csp: None,
    },
    Asset {
        path: "/widget/related-items.js",
        content_type: "text/javascript; charset=utf-8",
        body: WIDGET_JS,
        csp: None,
    },
    Asset {
        path: "/widget/demo.html",
        content_type: "text/html; charset=utf-8",
        body: WIDGET_DEMO,
        csp: Some(DEMO_CSP),
    },
];

/// The embedded file at exactly `path`, with its strong ETag.
pub fn find(path: &str) -> Option<(&'static Asset, &'static HeaderValue)> {
    let index = ASSETS.iter().position(|a| a.path == path)?;
    Some((&ASSETS[index], &etags()[index]))
}

/// The ETags, hashed once on first use: the same xxh3 tag as the API's bodies, so a rebuilt
/// binary with unchanged files keeps its tags and browsers keep their copies.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let hash = xxhash_rust::xxh3::xxh3_64(a.body.as_bytes());
                HeaderValue::from_str(&format!("\"{hash:016x}\"")).expect("hex is a valid header")
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_paths_are_found() {
        assert!(find("/openapi.json").is_some());
        assert!(find("/widget/related-items.js").is_some());
        assert!(find("/widget/demo.html").is_some());
        for other in [
            "/widget/",
            "/widget",
            "/widget/../openapi.json",
            "/widget/%2e%2e/openapi.json",
            "/widget/related-items.js/",
            "/widget//related-items.js",
            "/WIDGET/demo.html",
            "/widget/demo.html%00",
            "/openapi.json.bak",
            "/widget/../../../../etc/passwd",
        ] {
            assert!(find(other).is_none(), "{other}");
        }
    }

    #[test]
    fn the_document_is_json_and_tags_are_strong() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert_eq!(doc["openapi"], "3.1.0");
        for asset in &ASSETS {
            let (_, etag) = find(asset.path).unwrap();
            let tag = etag.to_str().unwrap();
            assert!(tag.len() == 18 && tag.starts_with('"') && tag.ends_with('"'));
        }
    }
}
