//! The console's static assets, embedded in the binary: its stylesheet, its one script, and htmx
//! (2.0.11, vendored; never loaded from a CDN). Each is served under a name that carries the first
//! 16 hex digits of its SHA-256, with a year-long immutable cache lifetime: a new build with a changed
//! asset changes the name, so a browser never uses a stale copy.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded asset.
pub struct Asset {
    /// The name it is served under, hash included.
    pub name: String,
    content_type: &'static str,
    body: &'static [u8],
}

fn asset(stem: &str, ext: &str, content_type: &'static str, body: &'static [u8]) -> Asset {
    let hash = hex::encode(Sha256::digest(body));
    Asset { name: format!("{stem}.{}.{ext}", &hash[..16]), content_type, body }
}

/// The stylesheet, the console's script and htmx.
pub struct Assets {
    pub css: Asset,
    pub script: Asset,
    pub htmx: Asset,
}

pub static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    css: asset("console", "css", "text/css; charset=utf-8", include_bytes!("assets/console.css")),
    script: asset("console", "js", "text/javascript; charset=utf-8", include_bytes!("assets/console.js")),
    htmx: asset("htmx-2.0.11.min", "js", "text/javascript; charset=utf-8", include_bytes!("assets/htmx-2.0.11.min.js")),
});

impl Assets {
    /// The path a page links to.
    pub fn path(asset: &Asset) -> String {
        format!("/assets/{}", asset.name)
    }

    fn find(&self, name: &str) -> Option<&Asset> {
        [&self.css, &self.script, &self.htmx].into_iter().find(|a| a.name == name)
    }
}

/// `GET /assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.find(&name) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(a.content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
            ],
            a.body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
