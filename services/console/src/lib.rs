//! The web console: the Vite build of `console/` (checked in under `dist/`, so a plain
//! `cargo build` needs no Node.js), embedded in the binary, answered by [`page`].
//!
//! - `/assets/*` have content-hashed names: cached for a year, `immutable`.
//! - Every other path is the single-page app's `index.html` (its routes are `#/…`), never
//!   cached, so a new release is picked up on the next load.
//! - A strict Content-Security-Policy: scripts, styles and connections from this origin only,
//!   no inline code, no frames; plus `nosniff`, no referrer, and `DENY` framing.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

#[derive(rust_embed::Embed)]
#[folder = "dist/"]
struct Assets;

/// The policy every console answer carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The answer to `method path` (GET or HEAD; the caller routes nothing else here).
pub fn page(method: &Method, path: &str) -> Response<Bytes> {
    if method != Method::GET && method != Method::HEAD {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::new(),
            "text/plain",
            "no-store",
        );
    }
    let asset = path.trim_start_matches('/');
    let (file, cache) = match asset.strip_prefix("assets/") {
        Some(_) => (Assets::get(asset), "public, max-age=31536000, immutable"),
        None => (Assets::get("index.html"), "no-cache"),
    };
    let Some(file) = file else {
        return answer(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"not found"),
            "text/plain",
            "no-store",
        );
    };
    let content_type = content_type_of(if asset.starts_with("assets/") {
        asset
    } else {
        "index.html"
    });
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(file.data.into_owned())
    };
    answer(StatusCode::OK, body, content_type, cache)
}

/// The built files' total size in bytes, and each one's (for the bundle-size figure).
pub fn bundle() -> Vec<(String, usize)> {
    Assets::iter()
        .filter_map(|name| Assets::get(&name).map(|f| (name.into_owned(), f.data.len())))
        .collect()
}

fn content_type_of(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn answer(
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
    cache: &'static str,
) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_shell_is_never_cached_and_hashed_assets_are_forever() {
        let index = page(&Method::GET, "/");
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(index.headers()[header::CACHE_CONTROL], "no-cache");
        let html = String::from_utf8_lossy(index.body()).into_owned();
        let script = html
            .split("src=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no script in {html}"));
        let asset = page(&Method::GET, script);
        assert_eq!(asset.status(), StatusCode::OK, "{script}");
        assert_eq!(
            asset.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(
            asset.headers()[header::CACHE_CONTROL]
                .to_str()
                .is_ok_and(|c| c.contains("immutable"))
        );
        assert_eq!(
            page(&Method::GET, "/requests/anything").body(),
            index.body(),
            "client routes get the shell"
        );
        assert_eq!(
            page(&Method::GET, "/assets/missing.js").status(),
            StatusCode::NOT_FOUND
        );
        assert!(page(&Method::HEAD, "/").body().is_empty());
    }

    #[test]
    fn every_answer_has_the_strict_policy() {
        for path in ["/", "/assets/nope.css"] {
            let answer = page(&Method::GET, path);
            assert_eq!(
                answer.headers()[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(answer.headers()[header::X_FRAME_OPTIONS], "DENY");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }

    #[test]
    fn the_built_html_has_no_inline_script_or_style() {
        let html = String::from_utf8_lossy(page(&Method::GET, "/").body()).into_owned();
        assert!(
            !html.contains("<script>") && !html.contains("<style"),
            "{html}"
        );
        assert!(bundle().iter().any(|(name, _)| name.ends_with(".js")));
    }
}
