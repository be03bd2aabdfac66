//! Hub loading against a local server that answers like the Hugging Face hub: download into a
//! temporary cache, offline reuse of the cache, and the errors for what can go wrong.
//! No test touches the real network.

use candle_core::Device;
use fracture::model::HeadConfig;
use fracture::weights::{HubOptions, WeightsSource};
use fracture::Error;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tiny_http::{Header, Response, Server};

const REPO: &str = "fracture-test/tiny-resnet-v2";
const FILE: &str = "weights.safetensors";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

mod common;
use common::{max_abs_diff, tiny_config as tiny, tiny_fixture as fixture, tiny_fixture_io};

/// A loopback HTTP server serving files at `/{repo}/resolve/{revision}/{file}` the way the hub
/// does: `etag` and `x-repo-commit` headers, `Range` requests answered with `206` and
/// `Content-Range`, `404` with `x-error-code` otherwise. It records the paths it was asked for.
struct FakeHub {
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeHub {
    fn start(files: HashMap<String, Vec<u8>>) -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (srv, log) = (server.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            for request in srv.incoming_requests() {
                let path = request.url().to_string();
                log.lock().unwrap().push(path.clone());
                let response = match files.get(path.trim_start_matches('/')) {
                    Some(body) => {
                        let range = request
                            .headers()
                            .iter()
                            .find(|h| h.field.equiv("Range"))
                            .map(|h| h.value.as_str().to_string());
                        serve(body, range.as_deref())
                    }
                    None => Response::from_data(b"Repository not found".to_vec())
                        .with_status_code(404)
                        .with_header(header("x-error-code", "RepoNotFound")),
                };
                let _ = request.respond(response);
            }
        });
        Self {
            server,
            thread: Some(thread),
            requests,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.server.server_addr().to_ip().unwrap())
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap()
}

/// The answer to a GET with an optional `Range: bytes=start-[end]`.
fn serve(body: &[u8], range: Option<&str>) -> Response<std::io::Cursor<Vec<u8>>> {
    let etag = format!("\"{:x}\"", body.len() * 7919);
    let common = |r: Response<std::io::Cursor<Vec<u8>>>| {
        r.with_header(header("etag", &etag))
            .with_header(header("x-repo-commit", COMMIT))
            .with_header(header("accept-ranges", "bytes"))
    };
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return common(Response::from_data(body.to_vec()));
    };
    let (start, end) = spec.split_once('-').unwrap();
    let start: usize = start.parse().unwrap();
    let end: usize = if end.is_empty() {
        body.len() - 1
    } else {
        end.parse::<usize>().unwrap().min(body.len() - 1)
    };
    let content_range = format!("bytes {start}-{end}/{}", body.len());
    common(Response::from_data(body[start..=end].to_vec()))
        .with_status_code(206)
        .with_header(header("content-range", &content_range))
}

fn serving_fixture() -> FakeHub {
    let body = std::fs::read(fixture(FILE)).unwrap();
    FakeHub::start(HashMap::from([(
        format!("{REPO}/resolve/main/{FILE}"),
        body,
    )]))
}

fn options(endpoint: String, cache: &Path, offline: bool) -> HubOptions {
    HubOptions {
        endpoint,
        cache_dir: cache.to_path_buf(),
        offline,
        progress: false,
        token: None,
    }
}

/// An endpoint nothing listens on.
fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn hub_source(repo: &str, file: &str) -> WeightsSource {
    WeightsSource::Hub {
        repo: repo.into(),
        revision: "main".into(),
        file: file.into(),
    }
}

/// Load the tiny backbone from `source` and check it against Keras's output.
fn assert_runs_like_keras(source: &WeightsSource, options: &HubOptions) {
    let loaded = source
        .load(tiny(), &HeadConfig::default(), &Device::Cpu, options)
        .unwrap();
    let (net, _) = loaded.into_network().unwrap();
    let (input, expected) = tiny_fixture_io();
    let diff = max_abs_diff(&net.backbone.forward_pooled(&input).unwrap(), &expected);
    assert!(diff < 1e-4, "max abs diff {diff}");
}

fn hub_error(result: fracture::Result<impl std::fmt::Debug>) -> String {
    match result.expect_err("expected an error") {
        err @ Error::Hub { .. } => err.to_string(),
        other => panic!("expected Error::Hub, got {other}"),
    }
}

#[test]
fn downloads_into_the_cache_then_loads_offline_from_it() {
    let cache = tempfile::tempdir().unwrap();
    let source = hub_source(REPO, FILE);
    {
        let hub = serving_fixture();
        assert_runs_like_keras(&source, &options(hub.endpoint(), cache.path(), false));
        let requests = hub.requests.lock().unwrap().clone();
        let resolve = format!("/{REPO}/resolve/main/{FILE}");
        assert!(requests.iter().all(|r| *r == resolve), "{requests:?}");
        assert!(!requests.is_empty());
    }
    // The server is gone: only the cache can answer.
    let offline = options(closed_endpoint(), cache.path(), true);
    assert_runs_like_keras(&source, &offline);
}

#[test]
fn downloaded_file_lands_in_the_standard_cache_layout() {
    let cache = tempfile::tempdir().unwrap();
    let hub = serving_fixture();
    let path = hub_source(REPO, FILE)
        .resolve(&options(hub.endpoint(), cache.path(), false))
        .unwrap()
        .unwrap();
    let expected = cache
        .path()
        .join("models--fracture-test--tiny-resnet-v2/snapshots")
        .join(COMMIT)
        .join(FILE);
    assert_eq!(path, expected);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(fixture(FILE)).unwrap()
    );
    let main_ref = cache
        .path()
        .join("models--fracture-test--tiny-resnet-v2/refs/main");
    assert_eq!(std::fs::read_to_string(main_ref).unwrap(), COMMIT);
}

#[test]
fn missing_repository_is_a_not_found_error() {
    let cache = tempfile::tempdir().unwrap();
    let hub = serving_fixture();
    let message = hub_error(hub_source("nobody/nothing", FILE).resolve(&options(
        hub.endpoint(),
        cache.path(),
        false,
    )));
    assert!(message.contains("nobody/nothing"), "{message}");
    assert!(message.contains("not found"), "{message}");
}

#[test]
fn missing_file_is_a_not_found_error() {
    let cache = tempfile::tempdir().unwrap();
    let hub = serving_fixture();
    let message = hub_error(hub_source(REPO, "absent.safetensors").resolve(&options(
        hub.endpoint(),
        cache.path(),
        false,
    )));
    assert!(message.contains("absent.safetensors"), "{message}");
    assert!(message.contains("not found"), "{message}");
}

#[test]
fn unreachable_endpoint_is_a_network_error_suggesting_offline_mode() {
    let cache = tempfile::tempdir().unwrap();
    let message =
        hub_error(hub_source(REPO, FILE).resolve(&options(closed_endpoint(), cache.path(), false)));
    assert!(message.contains("cannot reach"), "{message}");
    assert!(message.contains("HF_HUB_OFFLINE=1"), "{message}");
}

#[test]
fn empty_offline_cache_is_an_error_saying_what_to_do() {
    let cache = tempfile::tempdir().unwrap();
    let hub = serving_fixture();
    let message =
        hub_error(hub_source(REPO, FILE).resolve(&options(hub.endpoint(), cache.path(), true)));
    assert!(message.contains("offline mode"), "{message}");
    assert!(message.contains("not in the cache"), "{message}");
    assert!(
        hub.requests.lock().unwrap().is_empty(),
        "offline mode must not make requests"
    );
}

/// The only test in this binary that reads or writes the process environment.
#[test]
fn options_from_env_read_the_hugging_face_variables() {
    let home = tempfile::tempdir().unwrap();
    // SAFETY (here and below): the only test of this binary that reads or writes the
    // environment (the others build their `HubOptions` by hand); no other thread touches it.
    unsafe { std::env::set_var("HF_HOME", home.path()) };
    unsafe { std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:1234") };
    unsafe { std::env::set_var("HF_HUB_OFFLINE", "1") };
    unsafe { std::env::remove_var("HF_HUB_CACHE") };
    unsafe { std::env::remove_var("HF_TOKEN") };
    let options = HubOptions::from_env();
    assert_eq!(options.endpoint, "http://127.0.0.1:1234");
    assert_eq!(options.cache_dir, home.path().join("hub"));
    assert!(options.offline);
    assert_eq!(options.token, None);

    unsafe { std::env::set_var("HF_HUB_OFFLINE", "0") };
    unsafe { std::env::set_var("HF_HUB_CACHE", home.path().join("elsewhere")) };
    let options = HubOptions::from_env();
    assert!(!options.offline);
    assert_eq!(options.cache_dir, home.path().join("elsewhere"));
}

#[test]
fn a_commit_revision_is_found_in_the_offline_cache() {
    let cache = tempfile::tempdir().unwrap();
    {
        let hub = serving_fixture();
        hub_source(REPO, FILE)
            .resolve(&options(hub.endpoint(), cache.path(), false))
            .unwrap();
    }
    let pinned = WeightsSource::Hub {
        repo: REPO.into(),
        revision: COMMIT.into(),
        file: FILE.into(),
    };
    let offline = options(closed_endpoint(), cache.path(), true);
    assert_runs_like_keras(&pinned, &offline);
}

#[test]
fn the_token_never_shows_in_debug_output() {
    let secret = "hf_do_not_print_me_0123456789";
    let options = HubOptions {
        endpoint: "http://127.0.0.1:9".into(),
        cache_dir: std::env::temp_dir(),
        offline: true,
        progress: false,
        token: Some(secret.into()),
    };
    let shown = format!("{options:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains(r#"token: Some("<redacted>")"#), "{shown}");
    let builder = fracture::FractureClassifier::builder().hub_options(options.clone());
    let shown = format!("{builder:?} {builder:#?}");
    assert!(!shown.contains(secret), "{shown}");
    let without = HubOptions {
        token: None,
        ..options
    };
    assert!(format!("{without:?}").contains("token: None"));
}
