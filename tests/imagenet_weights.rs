//! Keras's ImageNet weights (`WeightsSource::KerasImageNet`): the Keras cache, downloads from a
//! loopback HTTP server into a temporary `KERAS_HOME`, MD5 checks against an injected table,
//! offline refusal, interrupted downloads, and the "top" file's `predictions` layer.
//! No test touches the real network.

use candle_core::Device;
use fracture::model::{HeadConfig, ResNetV2Config};
use fracture::weights::{
    HubOptions, KerasCache, KerasImageNet, ResNetV2Preset, WeightsSource, KERAS_IMAGENET_MD5,
};
use fracture::Error;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

mod common;
use common::{
    assert_close, keras_152v2_variables, load_safetensors, tiny_config, tiny_fixture,
    tiny_fixture_io, to_nchw,
};

/// The tiny backbone in the classic keras-applications layout (`save_weights`, Keras 2): what
/// the tests serve as a "notop" file. Its MD5 (from `md5sum`, not from the code under test):
const NOTOP_FIXTURE_MD5: &str = "138878fddfbd40d6236c73758c461c9f";
/// `tests/fixtures/keras_imagenet/tiny_top.h5` (`scripts/make_imagenet_fixture.py`): the tiny
/// backbone with `avg_pool` and a 5-class `predictions` layer, saved by tf_keras.
const TOP_FIXTURE_MD5: &str = "ed9dcce7e112758b622062e186d467d0";

fn notop_fixture() -> PathBuf {
    tiny_fixture("legacy_tf_keras.h5")
}

fn top_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras_imagenet")
}

fn notop() -> KerasImageNet {
    KerasImageNet::notop(ResNetV2Preset::ResNet152V2)
}

/// What the loopback server does for one path.
#[derive(Clone)]
enum Route {
    /// Send the whole body.
    Full(Vec<u8>),
    /// Announce the whole body, send its first `n` bytes, close the connection.
    DropAfter(Vec<u8>, usize),
}

/// A minimal HTTP/1.1 server on 127.0.0.1: one request per connection, `Connection: close`,
/// 404 for unknown paths. It records the paths asked for.
struct FileServer {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FileServer {
    fn start(routes: HashMap<String, Route>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop_flag, log) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(stream, &routes, &log);
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/keras-applications/resnet/", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn serve(mut stream: TcpStream, routes: &HashMap<String, Route>, log: &Mutex<Vec<String>>) {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => request.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().unwrap().push(path.clone());
    let route = routes.get(path.trim_start_matches("/keras-applications/resnet/"));
    let (body, send) = match route {
        Some(Route::Full(body)) => (body.as_slice(), body.len()),
        Some(Route::DropAfter(body, n)) => (body.as_slice(), *n),
        None => {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            );
            return;
        }
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(header.as_bytes());
    let _ = stream.write_all(&body[..send]);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// A server with one file at Keras's name for `weights`.
fn serving(weights: KerasImageNet, route: Route) -> FileServer {
    FileServer::start(HashMap::from([(weights.file_name(), route)]))
}

fn full(path: &Path) -> Route {
    Route::Full(std::fs::read(path).unwrap())
}

/// A Keras cache in a temporary `KERAS_HOME`, the given server, and a test hash table that
/// expects the tiny fixtures under Keras's ResNet152V2 file names.
fn cache(keras_home: &Path, base_url: String) -> KerasCache {
    KerasCache {
        dir: keras_home.join("models"),
        base_url,
        md5: HashMap::from([
            (notop().file_name(), NOTOP_FIXTURE_MD5.to_string()),
            (
                KerasImageNet::top(ResNetV2Preset::ResNet152V2).file_name(),
                TOP_FIXTURE_MD5.to_string(),
            ),
        ]),
    }
}

fn hub(offline: bool) -> HubOptions {
    HubOptions {
        endpoint: closed_endpoint(),
        cache_dir: std::env::temp_dir().join("fracture-unused-hub-cache"),
        offline,
        progress: false,
        token: None,
    }
}

/// An address nothing listens on.
fn closed_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/")
}

/// Every file in the cache folder, with its content.
fn cache_listing(cache: &KerasCache) -> BTreeMap<String, Vec<u8>> {
    match std::fs::read_dir(&cache.dir) {
        Err(_) => BTreeMap::new(),
        Ok(entries) => entries
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect(),
    }
}

/// Load the tiny backbone through `source` and check it against Keras's pooled output.
fn assert_backbone_runs_like_keras(source: &WeightsSource, cache: &KerasCache, hub: &HubOptions) {
    let loaded = source
        .load_with(
            tiny_config(),
            &HeadConfig::default(),
            &Device::Cpu,
            hub,
            cache,
        )
        .unwrap();
    assert!(loaded
        .weights()
        .source_name()
        .contains("Keras ImageNet resnet152v2"));
    let (net, _) = loaded.into_network().unwrap();
    let (input, expected) = tiny_fixture_io();
    let pooled = net.backbone.forward_pooled(&input).unwrap();
    assert_close("pooled features", &pooled, &expected, 1e-4, 0.0);
}

fn download_error(result: fracture::Result<impl std::fmt::Debug>) -> String {
    match result.expect_err("expected an error") {
        err @ Error::Download { .. } => {
            eprintln!("error: {err}");
            err.to_string()
        }
        other => panic!("expected Error::Download, got {other}"),
    }
}

#[test]
fn cache_hit_uses_the_keras_file_without_the_network() {
    let home = tempfile::tempdir().unwrap();
    let cache = cache(home.path(), closed_endpoint());
    std::fs::create_dir_all(&cache.dir).unwrap();
    let cached = cache.path_of(&notop().file_name());
    std::fs::copy(notop_fixture(), &cached).unwrap();
    let path = cache.fetch(notop(), &hub(false)).unwrap();
    assert_eq!(path, cached);
    assert_backbone_runs_like_keras(&WeightsSource::KerasImageNet(notop()), &cache, &hub(false));
}

#[test]
fn download_lands_in_the_keras_cache_then_is_a_cache_hit() {
    let home = tempfile::tempdir().unwrap();
    let server = serving(notop(), full(&notop_fixture()));
    let cache = cache(home.path(), server.url());
    let path = cache.fetch(notop(), &hub(false)).unwrap();
    assert_eq!(path, home.path().join("models").join(notop().file_name()));
    let listing = cache_listing(&cache);
    assert_eq!(
        listing.len(),
        1,
        "only the file itself: {:?}",
        listing.keys()
    );
    assert_eq!(
        listing[&notop().file_name()],
        std::fs::read(notop_fixture()).unwrap()
    );
    assert_eq!(
        server.requests(),
        vec![format!(
            "/keras-applications/resnet/{}",
            notop().file_name()
        )]
    );
    // Second time: from the cache, even though the server is still there.
    assert_backbone_runs_like_keras(&WeightsSource::KerasImageNet(notop()), &cache, &hub(false));
    assert_eq!(server.requests().len(), 1, "the cache hit made a request");
}

#[test]
fn download_with_the_wrong_hash_is_refused_with_both_hashes() {
    let home = tempfile::tempdir().unwrap();
    // The server answers with the top file under the notop name.
    let server = serving(notop(), full(&top_fixture_dir().join("tiny_top.h5")));
    let cache = cache(home.path(), server.url());
    let message = download_error(cache.fetch(notop(), &hub(false)));
    assert!(message.contains(TOP_FIXTURE_MD5), "{message}");
    assert!(message.contains(NOTOP_FIXTURE_MD5), "{message}");
    assert!(
        cache_listing(&cache).is_empty(),
        "{:?}",
        cache_listing(&cache).keys()
    );
    // Loading refuses too: nothing is built from an unverified file.
    let source = WeightsSource::KerasImageNet(notop());
    let loaded = source.load_with(
        tiny_config(),
        &HeadConfig::default(),
        &Device::Cpu,
        &hub(false),
        &cache,
    );
    assert!(matches!(loaded, Err(Error::Download { .. })));
}

#[test]
fn cached_file_with_the_wrong_hash_is_never_used() {
    let home = tempfile::tempdir().unwrap();
    let cache = cache(home.path(), closed_endpoint());
    std::fs::create_dir_all(&cache.dir).unwrap();
    let cached = cache.path_of(&notop().file_name());
    std::fs::copy(top_fixture_dir().join("tiny_top.h5"), &cached).unwrap();
    // Offline: refused, both hashes named, the file left alone.
    let message = download_error(cache.fetch(notop(), &hub(true)));
    assert!(message.contains(TOP_FIXTURE_MD5), "{message}");
    assert!(message.contains(NOTOP_FIXTURE_MD5), "{message}");
    // Online: replaced by a verified download.
    let server = serving(notop(), full(&notop_fixture()));
    let cache = KerasCache {
        base_url: server.url(),
        ..cache
    };
    assert_eq!(cache.fetch(notop(), &hub(false)).unwrap(), cached);
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(notop_fixture()).unwrap()
    );
}

#[test]
fn connection_dropped_halfway_leaves_the_cache_untouched() {
    let body = std::fs::read(notop_fixture()).unwrap();
    let half = body.len() / 2;
    let home = tempfile::tempdir().unwrap();
    let server = serving(notop(), Route::DropAfter(body.clone(), half));
    let cache = cache(home.path(), server.url());
    // A stale, wrong file already in the cache must survive the failed download byte for byte.
    std::fs::create_dir_all(&cache.dir).unwrap();
    let stale = b"an older, broken download".to_vec();
    std::fs::write(cache.path_of(&notop().file_name()), &stale).unwrap();
    let before = cache_listing(&cache);
    let message = download_error(cache.fetch(notop(), &hub(false)));
    assert!(message.contains(&notop().file_name()), "{message}");
    assert_eq!(server.requests().len(), 1);
    assert_eq!(cache_listing(&cache), before, "the cache changed");
    // Without a stale file, nothing at all is left behind.
    std::fs::remove_file(cache.path_of(&notop().file_name())).unwrap();
    download_error(cache.fetch(notop(), &hub(false)));
    assert!(
        cache_listing(&cache).is_empty(),
        "{:?}",
        cache_listing(&cache).keys()
    );
}

#[test]
fn offline_mode_refuses_to_download_and_says_where_to_put_the_file() {
    let home = tempfile::tempdir().unwrap();
    let server = serving(notop(), full(&notop_fixture()));
    let cache = cache(home.path(), server.url());
    let message = download_error(cache.fetch(notop(), &hub(true)));
    let file = notop().file_name();
    assert!(message.contains(&file), "{message}");
    assert!(
        message.contains(&format!("{}{file}", server.url())),
        "{message}"
    );
    assert!(
        message.contains(&cache.path_of(&file).display().to_string()),
        "{message}"
    );
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
    assert!(server.requests().is_empty(), "offline mode made a request");
    assert!(cache_listing(&cache).is_empty());
}

#[test]
fn top_file_loads_the_predictions_layer_like_keras() {
    let home = tempfile::tempdir().unwrap();
    let top = KerasImageNet::top(ResNetV2Preset::ResNet152V2);
    let server = serving(top, full(&top_fixture_dir().join("tiny_top.h5")));
    let cache = cache(home.path(), server.url());
    let io = load_safetensors(&top_fixture_dir().join("top_io.safetensors"));
    let input = to_nchw(&io["input"]);
    for fast_path in [true, false] {
        let clf = WeightsSource::KerasImageNet(top)
            .load_imagenet_classifier(tiny_config(), &Device::Cpu, &hub(false), &cache)
            .unwrap();
        let clf = if fast_path {
            clf
        } else {
            clf.without_fast_path()
        };
        assert_eq!(clf.uses_fast_path(), fast_path);
        assert_eq!(clf.classes(), 5);
        let probabilities = clf.probabilities(&input).unwrap();
        assert_close(
            "probabilities",
            &probabilities,
            &io["probabilities"],
            1e-5,
            0.0,
        );
        let logits = clf.logits(&input).unwrap();
        assert_close("logits", &logits, &io["logits"], 1e-4, 1e-5);
    }
    assert_eq!(server.requests().len(), 1, "the second load is a cache hit");
}

#[test]
fn top_k_ranks_classes_of_an_image_like_keras() {
    let home = tempfile::tempdir().unwrap();
    let top = KerasImageNet::top(ResNetV2Preset::ResNet152V2);
    let cache = cache(home.path(), closed_endpoint());
    std::fs::create_dir_all(&cache.dir).unwrap();
    std::fs::copy(
        top_fixture_dir().join("tiny_top.h5"),
        cache.path_of(&top.file_name()),
    )
    .unwrap();
    let clf = WeightsSource::KerasImageNet(top)
        .load_imagenet_classifier(tiny_config(), &Device::Cpu, &hub(true), &cache)
        .unwrap();
    // The fixture's input is `x / 127.5 - 1` of these pixels, at the model's 64 x 64.
    let io = load_safetensors(&tiny_fixture("io.safetensors"));
    let pixels: Vec<u8> = io["image_uint8"]
        .get(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let image = image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(64, 64, pixels).unwrap());
    let preprocess = fracture::preprocess::Preprocess {
        height: 64,
        width: 64,
        ..Default::default()
    };
    let ranked = clf.top_k(&image, &preprocess, 3).unwrap();
    let keras: Vec<f32> = load_safetensors(&top_fixture_dir().join("top_io.safetensors"))
        ["probabilities"]
        .get(1)
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut order: Vec<usize> = (0..keras.len()).collect();
    order.sort_by(|&a, &b| keras[b].total_cmp(&keras[a]));
    assert_eq!(ranked.iter().map(|r| r.0).collect::<Vec<_>>(), order[..3]);
    for (class, p) in ranked {
        assert!(
            (p - keras[class]).abs() < 1e-5,
            "class {class}: {p} vs Keras {}",
            keras[class]
        );
    }
}

#[test]
fn notop_file_has_no_imagenet_classifier() {
    let home = tempfile::tempdir().unwrap();
    let cache = cache(home.path(), closed_endpoint());
    std::fs::create_dir_all(&cache.dir).unwrap();
    std::fs::copy(notop_fixture(), cache.path_of(&notop().file_name())).unwrap();
    let err = WeightsSource::KerasImageNet(notop())
        .load_imagenet_classifier(tiny_config(), &Device::Cpu, &hub(true), &cache)
        .unwrap_err()
        .to_string();
    assert!(err.contains("predictions"), "{err}");
    assert!(err.contains("notop"), "{err}");
}

#[test]
fn notop_file_is_validated_against_keras_814_variables() {
    let keras_vars = keras_152v2_variables();
    assert_eq!(keras_vars.len(), 814);
    let ours: BTreeMap<String, Vec<usize>> = notop()
        .model
        .config()
        .variables()
        .into_iter()
        .map(|v| (v.name, v.shape))
        .collect();
    assert_eq!(ours, keras_vars);
    // And the loader checks them: the tiny file under the ResNet152V2 name, loaded as
    // ResNet152V2, is refused with every one of the 814 accounted for.
    let home = tempfile::tempdir().unwrap();
    let cache = cache(home.path(), closed_endpoint());
    std::fs::create_dir_all(&cache.dir).unwrap();
    std::fs::copy(notop_fixture(), cache.path_of(&notop().file_name())).unwrap();
    let err = WeightsSource::KerasImageNet(notop())
        .load_with(
            ResNetV2Config::resnet152v2(),
            &HeadConfig::default(),
            &Device::Cpu,
            &hub(true),
            &cache,
        )
        .unwrap_err()
        .to_string();
    // "<source>: M missing, W with the wrong shape, U unexpected, K matched"
    let summary = err.lines().next().unwrap();
    let count = |label: &str| -> usize {
        let before = summary.split(label).next().unwrap().trim_end();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (missing, wrong, matched) = (
        count(" missing"),
        count(" with the wrong shape"),
        count(" matched"),
    );
    assert_eq!(missing + wrong + matched, 814, "{err}");
    assert!(missing > 0, "{err}");
    // ResNet50V2's file on a ResNet152V2 backbone: the error says which is which.
    let fifty = KerasImageNet::notop(ResNetV2Preset::ResNet50V2);
    let mut cache = cache;
    cache
        .md5
        .insert(fifty.file_name(), NOTOP_FIXTURE_MD5.to_string());
    std::fs::copy(notop_fixture(), cache.path_of(&fifty.file_name())).unwrap();
    let err = WeightsSource::KerasImageNet(fifty)
        .load_with(
            ResNetV2Config::resnet152v2(),
            &HeadConfig::default(),
            &Device::Cpu,
            &hub(true),
            &cache,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weights of ResNetV2 [3, 4, 6, 3]")
            && err.contains("the backbone is ResNetV2 [3, 8, 36, 3]"),
        "{err}"
    );
}

#[test]
fn published_hashes_are_keras_own() {
    let expected = [
        (
            "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
            "3ef43a0b657b3be2300d5770ece849e0",
        ),
        (
            "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "fac2f116257151a9d068a22e544a4917",
        ),
        (
            "resnet101v2_weights_tf_dim_ordering_tf_kernels.h5",
            "6343647c601c52e1368623803854d971",
        ),
        (
            "resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "c0ed64b8031c3730f411d2eb4eea35b5",
        ),
        (
            "resnet152v2_weights_tf_dim_ordering_tf_kernels.h5",
            "a49b44d1979771252814e80f8ec446f9",
        ),
        (
            "resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "ed17cf2e0169df9d443503ef94b23b33",
        ),
    ];
    let table: HashMap<String, &str> = KERAS_IMAGENET_MD5
        .iter()
        .map(|&(model, include_top, md5)| (KerasImageNet { model, include_top }.file_name(), md5))
        .collect();
    assert_eq!(table.len(), 6);
    for (file, md5) in expected {
        assert_eq!(table.get(file), Some(&md5), "{file}");
    }
    // Not `from_env`: `keras_home_sets_the_cache_folder` sets HOME meanwhile, and reading the
    // environment while another thread writes it is undefined behaviour.
    let defaults = KerasCache {
        dir: PathBuf::new(),
        base_url: fracture::weights::keras_imagenet::KERAS_RESNET_WEIGHTS_URL.to_string(),
        md5: HashMap::new(),
    };
    assert_eq!(
        defaults.url_of("resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    );
}

/// The only test in this binary that reads or writes the process environment.
#[test]
fn keras_home_sets_the_cache_folder() {
    let home = tempfile::tempdir().unwrap();
    // SAFETY (here and below): the only test of this binary that reads or writes the
    // environment; no other thread touches it meanwhile.
    unsafe { std::env::set_var("KERAS_HOME", home.path()) };
    assert_eq!(KerasCache::from_env().dir, home.path().join("models"));
    unsafe { std::env::remove_var("KERAS_HOME") };
    let user_home = std::env::var_os("HOME");
    unsafe { std::env::set_var("HOME", home.path()) };
    let dir = KerasCache::from_env().dir;
    match user_home {
        Some(h) => unsafe { std::env::set_var("HOME", h) },
        None => unsafe { std::env::remove_var("HOME") },
    }
    assert_eq!(dir, home.path().join(".keras").join("models"));
}
