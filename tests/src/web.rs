//! A small HTTP/1.1 client for the console tests that need to see exactly what goes over the wire:
//! status codes, headers and cookies, a form posted without its token or from another origin. It
//! keeps cookies like a browser (by name; `Max-Age=0` removes one) and never follows redirects.
//! Scenarios that need a real browser drive Chromium instead (`tests/tests/browser.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// A response, read whole.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// A response header as text ('' when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Where a redirect goes ('' when it is not one).
    pub fn location(&self) -> &str {
        self.header("location")
    }

    /// The value of the first `<input … name="NAME" … value="…">` in the page.
    pub fn hidden(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!("name=\"{name}\""))?;
        let start = self.body[..at].rfind('<')?;
        let end = at + self.body[at..].find('>')?;
        let tag = &self.body[start..end];
        let v = tag.find("value=\"")? + "value=\"".len();
        Some(tag[v..v + tag[v..].find('"')?].to_owned())
    }
}

/// One browser-like visitor of a console.
pub struct Web {
    addr: SocketAddr,
    /// The `Origin` its posts carry (the console's own, unless a test says otherwise).
    pub origin: String,
    pub cookies: BTreeMap<String, String>,
}

impl Web {
    /// A visitor of the console at `addr`, posting from its own origin.
    pub fn new(addr: SocketAddr) -> Web {
        Web { addr, origin: format!("http://{addr}"), cookies: BTreeMap::new() }
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, None, &[]).await
    }

    /// `POST path` with a form, from [`Web::origin`].
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.origin.clone();
        self.post_with(path, form, &[("origin", &origin)]).await
    }

    /// `POST path` with a form and exactly the extra headers given (no `Origin` unless among them).
    pub async fn post_with(&mut self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Page {
        let body = form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
        let body = ("application/x-www-form-urlencoded".to_owned(), body.into_bytes());
        self.send(Method::POST, path, Some(body), headers).await
    }

    /// `POST path` as `multipart/form-data`, as a browser posts a form with a file: the text fields,
    /// then `file` (field name, file name, content type, bytes), from the console's own origin.
    pub async fn post_multipart(&mut self, path: &str, form: &[(&str, &str)], file: (&str, &str, &str, &[u8])) -> Page {
        let boundary = "haven-test-boundary-7f3a";
        let mut body = Vec::new();
        for (k, v) in form {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
            );
        }
        let (name, file_name, content_type, bytes) = file;
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let origin = self.origin.clone();
        let content_type = format!("multipart/form-data; boundary={boundary}");
        self.send(Method::POST, path, Some((content_type, body)), &[("origin", &origin)]).await
    }

    /// Signs in through the form, as a person would; returns the answer to the post.
    pub async fn sign_in(&mut self, name: &str, password: &str) -> Page {
        let form = self.get("/sign-in").await;
        assert_eq!(form.status, StatusCode::OK, "the sign-in page: {}", form.body);
        let token = form.hidden("token").expect("the sign-in form carries a token");
        self.post("/sign-in", &[("name", name), ("password", password), ("token", &token)]).await
    }

    /// Signs in with a password and then a second-factor code; returns the answer to the code.
    pub async fn sign_in_with_code(&mut self, name: &str, password: &str, code: &str) -> Page {
        let first = self.sign_in(name, password).await;
        assert_eq!(first.location(), "/sign-in/code", "the password is right: {}", first.body);
        let form = self.get("/sign-in/code").await;
        let csrf = form.hidden("csrf").expect("the code form carries its token");
        self.post("/sign-in/code", &[("csrf", &csrf), ("code", code)]).await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(String, Vec<u8>)>,
        extra: &[(&str, &str)],
    ) -> Page {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.expect("console reachable");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path).header("host", self.addr.to_string());
        if !self.cookies.is_empty() {
            let cookies = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            req = req.header("cookie", cookies);
        }
        if let Some((content_type, _)) = &body {
            req = req.header("content-type", content_type.as_str());
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let req =
            req.body(Full::new(hyper::body::Bytes::from(body.map(|b| b.1).unwrap_or_default()))).expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        for c in parts.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            if let Some((k, v)) = pair.split_once('=') {
                if attrs.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        let body = body.collect().await.expect("body").to_bytes();
        Page { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() }
    }
}

/// Form-encodes a value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
