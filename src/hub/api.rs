//! The hub's HTTP interface, spoken as `huggingface_hub` speaks it (`hf_api.model_info`,
//! `file_download.get_hf_file_metadata` and `http_get`):
//!
//! - `GET {endpoint}/api/models/{repo}/revision/{rev}` → `sha` and `siblings[].rfilename`;
//! - `HEAD {endpoint}/{repo}/resolve/{rev}/{file}` with `Accept-Encoding: identity`, following
//!   only relative redirects: `X-Repo-Commit`, `X-Linked-Etag` or `ETag`, `X-Linked-Size` or
//!   `Content-Length`, and for LFS files a 302 whose `Location` is the download URL;
//! - `GET` that location, with `Range: bytes=N-` to resume, following redirects.
//!
//! `Authorization: Bearer <token>` goes only to the endpoint's own origin, never to a CDN a
//! redirect points at. Transient failures (network errors, timeouts, 5xx, 429) are retried with
//! exponential backoff.

use std::collections::BTreeSet;
use std::time::Duration;

use ureq::http::Response;
use ureq::Body;

use super::{HubError, HubOptions};

/// Attempts per request before giving up (a download that makes progress starts counting again).
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// What the API says about a revision.
#[derive(Debug, Clone)]
pub(crate) struct RepoInfo {
    /// The commit the revision points to.
    pub sha: String,
    /// Every file path in the repo at that commit.
    pub files: BTreeSet<String>,
}

/// What a `HEAD .../resolve/...` says about one file.
#[derive(Debug, Clone)]
pub(crate) struct FileMeta {
    /// The blob name: the LFS sha256 for large files, the git blob id for the others.
    pub etag: String,
    pub size: u64,
    /// Where to `GET` the bytes (a CDN URL for LFS files).
    pub location: String,
}

/// One failed attempt.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No HTTP answer; `retry` is false for failures that will not go away (DNS, TLS, bad URL).
    Net { cause: String, retry: bool },
    /// An HTTP error status, with the hub's `X-Error-Code` when it sent one.
    Status {
        status: u16,
        code: Option<String>,
        retry_after: Option<u64>,
    },
    /// An answer we cannot use.
    Bad(String),
}

impl Failure {
    pub fn retryable(&self) -> bool {
        match self {
            Self::Net { retry, .. } => *retry,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Bad(_) => false,
        }
    }

    /// How long to wait before attempt `attempt + 1`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        if let Self::Status {
            retry_after: Some(s),
            ..
        } = self
        {
            return Duration::from_secs((*s).min(30));
        }
        Duration::from_millis(500u64 << attempt.saturating_sub(1).min(4))
    }

    pub fn net(cause: impl Into<String>) -> Self {
        Self::Net {
            cause: cause.into(),
            retry: true,
        }
    }
}

impl From<ureq::Error> for Failure {
    fn from(e: ureq::Error) -> Self {
        let retry = !matches!(
            e,
            ureq::Error::HostNotFound
                | ureq::Error::BadUri(_)
                | ureq::Error::Tls(_)
                | ureq::Error::InvalidProxyUrl
        );
        Self::Net {
            cause: e.to_string(),
            retry,
        }
    }
}

/// A client for one endpoint.
pub(crate) struct Client {
    agent: ureq::Agent,
    pub endpoint: String,
    token: Option<String>,
}

impl Client {
    pub fn new(opts: &HubOptions) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(format!("huatuo/{}", env!("CARGO_PKG_VERSION")))
            .accept_encoding("identity")
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build();
        Self {
            agent: config.into(),
            endpoint: opts.endpoint.trim_end_matches('/').to_string(),
            token: opts.token.clone(),
        }
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`.
    pub fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint,
            quote(revision, false),
            quote(file, true)
        )
    }

    /// The revision's commit and file list, trying at most `attempts` times.
    pub fn repo_info(
        &self,
        repo: &str,
        revision: &str,
        attempts: u32,
    ) -> Result<RepoInfo, HubError> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.endpoint,
            quote(revision, false)
        );
        let what = format!("revision {revision} of {repo}");
        let text = self
            .retrying(attempts, || {
                let (resp, _) = self.send("GET", &url, None, true)?;
                resp.into_body()
                    .into_with_config()
                    .limit(64 << 20)
                    .read_to_string()
                    .map_err(Failure::from)
            })
            .map_err(|f| self.error(repo, &what, f))?;
        let bad = |detail: String| HubError::BadResponse {
            what: what.clone(),
            detail,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON ({e})")))?;
        let sha = json
            .get("sha")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| bad("no commit sha in the answer".to_string()))?
            .to_string();
        let files = json
            .get("siblings")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no file list (siblings) in the answer".to_string()))?
            .iter()
            .filter_map(|s| s.get("rfilename").and_then(|f| f.as_str()))
            .map(str::to_string)
            .collect();
        Ok(RepoInfo { sha, files })
    }

    /// `HEAD` a file at a revision: its blob name, size and download location.
    pub fn file_meta(&self, repo: &str, revision: &str, file: &str) -> Result<FileMeta, HubError> {
        let url = self.resolve_url(repo, revision, file);
        let what = format!("{repo}/{file}");
        let (resp, final_url) = self
            .retrying(MAX_ATTEMPTS, || self.send("HEAD", &url, None, false))
            .map_err(|f| self.error(repo, &what, f))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let bad = |detail: &str| HubError::BadResponse {
            what: what.clone(),
            detail: detail.to_string(),
        };
        let etag = header("x-linked-etag")
            .or_else(|| header("etag"))
            .map(|e| normalize_etag(&e))
            .filter(|e| {
                !e.is_empty()
                    && e.len() <= 128
                    && e.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .ok_or_else(|| {
                bad("no usable ETag header (is HF_ENDPOINT a hub or a mirror of one?)")
            })?;
        let size = header("x-linked-size")
            .or_else(|| header("content-length"))
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| bad("no size (X-Linked-Size or Content-Length header)"))?;
        let location = if resp.status().is_redirection() {
            let loc = header("location").ok_or_else(|| bad("a redirect without Location"))?;
            join_url(&final_url, &loc)
        } else {
            final_url
        };
        Ok(FileMeta {
            etag,
            size,
            location,
        })
    }

    /// `GET location` from byte `offset` on, following redirects (one attempt; the caller
    /// retries and resumes).
    pub fn open(&self, location: &str, offset: u64) -> Result<Response<Body>, Failure> {
        self.send("GET", location, Some(offset), true)
            .map(|(r, _)| r)
    }

    /// One request, following redirects (all of them when `follow_absolute`, else only
    /// relative ones, as huggingface_hub's HEAD does). Returns the response and its URL. Error
    /// statuses become [`Failure::Status`].
    fn send(
        &self,
        method: &str,
        url: &str,
        offset: Option<u64>,
        follow_absolute: bool,
    ) -> Result<(Response<Body>, String), Failure> {
        let mut url = url.to_string();
        for _ in 0..10 {
            let mut req = if method == "HEAD" {
                self.agent.head(&url)
            } else {
                self.agent.get(&url)
            };
            if let Some(n) = offset.filter(|n| *n > 0) {
                req = req.header("Range", format!("bytes={n}-"));
            }
            if let Some(token) = &self.token {
                if same_origin(&url, &self.endpoint) {
                    req = req.header("Authorization", format!("Bearer {token}"));
                }
            }
            let resp = req.call()?;
            let status = resp.status().as_u16();
            if resp.status().is_redirection() && status != 304 {
                let Some(loc) = resp.headers().get("location").and_then(|v| v.to_str().ok()) else {
                    return Err(Failure::Bad(format!("HTTP {status} without Location")));
                };
                let relative = !loc.contains("://") && !loc.starts_with("//");
                if follow_absolute || relative {
                    url = join_url(&url, loc);
                    continue;
                }
                return Ok((resp, url));
            }
            if status >= 400 {
                let header = |n: &str| {
                    resp.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                return Err(Failure::Status {
                    status,
                    code: header("x-error-code"),
                    retry_after: header("retry-after").and_then(|s| s.trim().parse().ok()),
                });
            }
            return Ok((resp, url));
        }
        Err(Failure::Bad("more than 10 redirects".to_string()))
    }

    /// Runs `f` until it succeeds, fails for good, or `max` attempts are spent.
    pub fn retrying<T>(
        &self,
        max: u32,
        mut f: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, (Failure, u32)> {
        let mut attempt = 1;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && attempt < max => {
                    std::thread::sleep(e.backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err((e, attempt)),
            }
        }
    }

    /// The user-facing error for a failed request about `what` in `repo`.
    pub fn error(&self, repo: &str, what: &str, (failure, attempts): (Failure, u32)) -> HubError {
        match failure {
            Failure::Net { cause, .. } => HubError::Network {
                what: format!("{} for {what}", self.endpoint),
                attempts,
                cause,
            },
            Failure::Status { status, code, .. } => match (status, code.as_deref()) {
                (401 | 403 | 404, Some("RepoNotFound")) => HubError::NotFound {
                    what: format!("repository {repo}"),
                    endpoint: self.endpoint.clone(),
                },
                (404, Some("RevisionNotFound")) => HubError::NotFound {
                    what: what.to_string(),
                    endpoint: self.endpoint.clone(),
                },
                (401 | 403, _) => HubError::Unauthorized {
                    repo: repo.to_string(),
                    status,
                    token_sent: self.token.is_some(),
                },
                (404, _) => HubError::NotFound {
                    what: what.to_string(),
                    endpoint: self.endpoint.clone(),
                },
                _ => HubError::Http {
                    what: what.to_string(),
                    status,
                    attempts,
                },
            },
            Failure::Bad(detail) => HubError::BadResponse {
                what: what.to_string(),
                detail,
            },
        }
    }
}

/// huggingface_hub's `_normalize_etag`: drop a weak `W/` prefix and the quotes.
pub(crate) fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// Percent-encodes all but RFC 3986 unreserved characters (and `/` when `keep_slash`), as
/// Python's `quote(s, safe="")` / `quote(s)` do.
pub(crate) fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://host:port` of a URL, lower-cased, with the scheme's default port made explicit.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?.to_ascii_lowercase();
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let port = match (has_port, scheme.as_str()) {
        (true, _) => String::new(),
        (false, "https") => ":443".to_string(),
        (false, _) => ":80".to_string(),
    };
    Some(format!("{scheme}://{host_port}{port}"))
}

/// Both URLs have the same scheme, host and port.
pub(crate) fn same_origin(a: &str, b: &str) -> bool {
    matches!((origin(a), origin(b)), (Some(x), Some(y)) if x == y)
}

/// Resolves a `Location` against the URL that answered with it.
pub(crate) fn join_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme = base.split_once("://").map_or("https", |(s, _)| s);
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    let after_scheme = base.split_once("://").map_or(base, |(_, r)| r);
    let authority_end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let root = &base[..base.len() - after_scheme.len() + authority_end];
    if location.starts_with('/') {
        return format!("{root}{location}");
    }
    let path = after_scheme[authority_end..]
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    format!("{root}{dir}{location}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(quote("vit/a b.json", true), "vit/a%20b.json");
        assert!(same_origin(
            "https://huggingface.co/x",
            "https://huggingface.co"
        ));
        assert!(same_origin(
            "https://huggingface.co:443/x",
            "https://HuggingFace.co"
        ));
        assert!(!same_origin(
            "https://cdn-lfs.huggingface.co/x",
            "https://huggingface.co"
        ));
        assert!(!same_origin("http://127.0.0.1:81/x", "http://127.0.0.1:80"));
        assert_eq!(
            join_url("http://h:1/a/resolve/main/f?x=1", "/b/resolve/main/f"),
            "http://h:1/b/resolve/main/f"
        );
        assert_eq!(join_url("http://h:1/a/b", "c"), "http://h:1/a/c");
        assert_eq!(join_url("https://h/a", "//cdn/x"), "https://cdn/x");
        assert_eq!(join_url("https://h/a", "http://cdn/x"), "http://cdn/x");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let f = Failure::net("reset");
        assert_eq!(f.backoff(1), Duration::from_millis(500));
        assert_eq!(f.backoff(3), Duration::from_millis(2000));
        assert_eq!(f.backoff(9), Duration::from_millis(8000));
        assert!(Failure::Status {
            status: 503,
            code: None,
            retry_after: None
        }
        .retryable());
        assert!(!Failure::Status {
            status: 404,
            code: None,
            retry_after: None
        }
        .retryable());
    }
}
