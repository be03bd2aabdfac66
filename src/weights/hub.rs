//! Downloading weights from the Hugging Face hub (or any server that speaks its protocol) into
//! the standard hub cache, with an offline mode that uses the cache alone.

use crate::error::{Error, Result};
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use std::path::PathBuf;

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to reach the hub.
///
/// [`HubOptions::from_env`] (also the `Default`) reads the variables the Hugging Face tools
/// use: `HF_ENDPOINT` (a mirror or a local server), `HF_HUB_CACHE` or `HF_HOME` (the cache:
/// `$HF_HOME/hub`, default `~/.cache/huggingface/hub`), `HF_HUB_OFFLINE=1` (never touch the
/// network, use the cache only) and `HF_TOKEN` (private or gated repositories). Tests and
/// programs that must not depend on the environment set the fields directly.
///
/// ```
/// use fracture::weights::HubOptions;
/// let options = HubOptions {
///     endpoint: "http://127.0.0.1:8080".into(),
///     cache_dir: std::env::temp_dir().join("hub-cache"),
///     offline: true,
///     progress: false,
///     token: None,
/// };
/// assert!(options.offline);
/// ```
/// `Debug` shows `token: Some("<redacted>")`, never the token itself, so options (and the
/// classifier builder holding them) can be logged.
///
/// ```
/// use fracture::weights::HubOptions;
/// let options = HubOptions { token: Some("hf_secret".into()), ..HubOptions::from_env() };
/// let shown = format!("{options:?}");
/// assert!(shown.contains("<redacted>") && !shown.contains("hf_secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Base URL: files are fetched from `{endpoint}/{repo}/resolve/{revision}/{file}`.
    pub endpoint: String,
    /// The hub cache folder (the `hub` folder inside `HF_HOME`).
    pub cache_dir: PathBuf,
    /// Use the cache only; an uncached file is an error instead of a download.
    pub offline: bool,
    /// Show a progress bar while downloading.
    pub progress: bool,
    /// Access token for private or gated repositories.
    pub token: Option<String>,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// The same fields, the token replaced by a placeholder.
        #[derive(Debug)]
        #[allow(dead_code)] // the fields are read by the derived `Debug` only
        struct HubOptions<'a> {
            endpoint: &'a str,
            cache_dir: &'a std::path::Path,
            offline: bool,
            progress: bool,
            token: Option<&'a str>,
        }
        let Self {
            endpoint,
            cache_dir,
            offline,
            progress,
            token,
        } = self;
        let shown = HubOptions {
            endpoint,
            cache_dir,
            offline: *offline,
            progress: *progress,
            token: token.as_ref().map(|_| "<redacted>"),
        };
        shown.fmt(f)
    }
}

impl Default for HubOptions {
    fn default() -> Self {
        Self::from_env()
    }
}

impl HubOptions {
    /// Options from `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, `HF_HUB_OFFLINE` and `HF_TOKEN`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| Cache::from_env().path().clone());
        Self {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            cache_dir,
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| is_truthy(&v)),
            progress: true,
            token: var("HF_TOKEN"),
        }
    }
}

/// How the Hugging Face tools read boolean variables (`1`, `true`, `yes`, `on`).
fn is_truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// The local path of `file` in model repository `repo` at `revision`, downloading it into the
/// cache unless it is already there (or failing if `options.offline` and it is not).
///
/// ```no_run
/// use fracture::weights::{hub::fetch, HubOptions};
/// let path = fetch("org/resnet152v2-imagenet", "main", "model.safetensors", &HubOptions::from_env())?;
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn fetch(repo: &str, revision: &str, file: &str, options: &HubOptions) -> Result<PathBuf> {
    let hub_error = |message: String| Error::Hub {
        repo: repo.to_string(),
        file: file.to_string(),
        message,
    };
    let repository = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    let cache = Cache::new(options.cache_dir.clone());
    // A branch or tag resolves through `refs/<revision>`; a commit hash names its snapshot.
    let snapshot = options
        .cache_dir
        .join(repository.folder_name())
        .join("snapshots")
        .join(revision)
        .join(file);
    if let Some(path) = cache.repo(repository.clone()).get(file) {
        return Ok(path);
    }
    if snapshot.is_file() {
        return Ok(snapshot);
    }
    if options.offline {
        return Err(hub_error(format!(
            "offline mode (HF_HUB_OFFLINE) is on and revision {revision:?} of this file is not in the cache {}; \
             run once with network access (HF_HUB_OFFLINE unset) to download it, or point HF_HOME at a cache that holds it",
            options.cache_dir.display()
        )));
    }
    let api = ApiBuilder::from_cache(cache)
        .with_endpoint(options.endpoint.trim_end_matches('/').to_string())
        .with_progress(options.progress)
        .with_token(options.token.clone())
        .build()
        .map_err(|e| hub_error(format!("cannot set up the HTTP client: {e}")))?;
    api.repo(repository)
        .download(file)
        .map_err(|e| hub_error(describe(e, revision, &options.endpoint)))
}

/// A message that says what went wrong and what to do about it.
fn describe(error: ApiError, revision: &str, endpoint: &str) -> String {
    match &error {
        ApiError::RequestError(inner) => match inner.as_ref() {
            ureq::Error::Status(404, _) => format!(
                "not found at {endpoint} (revision {revision:?}): check the repository id, the revision and the file name"
            ),
            ureq::Error::Status(code @ (401 | 403), _) => format!(
                "access denied (HTTP {code}) at {endpoint}: the repository does not exist, or it is private or gated; \
                 check its id, and set HF_TOKEN to a token that can read it"
            ),
            ureq::Error::Status(code, _) => format!("the hub at {endpoint} answered HTTP {code}"),
            ureq::Error::Transport(transport) => format!(
                "cannot reach {endpoint} ({transport}): check the network connection or HF_ENDPOINT, \
                 or set HF_HUB_OFFLINE=1 to use files already in the cache"
            ),
        },
        ApiError::MissingHeader(_) | ApiError::InvalidHeader(_) => format!(
            "{endpoint} did not answer like the Hugging Face hub ({error}); check HF_ENDPOINT"
        ),
        _ => format!("download failed: {error}"),
    }
}
