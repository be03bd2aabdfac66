//! The report in a real browser: headless Chromium opens `report.html` from disk (`file://`),
//! and the test fails on any console message (the page logs none of its own: a message is a
//! blocked fetch, a script error or an image that did not decode), on a missing section, or on
//! a number whose text or value differs from `metrics.json`. It saves a full-page screenshot
//! under the target folder (`target/tmp/report_browser/screenshot.png`) to look at.
//!
//! It then proves the check can fail: a copy of the page without a section, with one number
//! changed, and with a console error must each be caught.
//!
//! Needs Chromium (`apt-get install chromium`; `.ci/run` installs it), or its path in
//! `CHROMIUM`.

use crate::common;

use fracture::augment::TtaConfig;
use fracture::report::{DataSource, Report};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("no Chromium found: apt-get install chromium, or set CHROMIUM to its path");
}

/// Run headless Chromium on a page from disk; stdout and stderr.
fn run_chromium(page: &Path, args: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(&url)
        .output()
        .expect("Chromium runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "Chromium failed on {url}: {stderr}"
    );
    (stdout, stderr)
}

/// The page's DOM after load, and every console message it logged.
fn load(page: &Path) -> (String, Vec<String>) {
    let (dom, log) = run_chromium(
        page,
        &[
            "--enable-logging=stderr".into(),
            "--v=0".into(),
            "--dump-dom".into(),
        ],
    );
    let console = log
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (dom, console)
}

/// The value of `attribute` in the first tag of `dom` that has it, after `from`.
fn attribute<'a>(dom: &'a str, attribute: &str) -> Option<&'a str> {
    let start = dom.find(&format!("{attribute}=\""))? + attribute.len() + 2;
    let end = start + dom[start..].find('"')?;
    Some(&dom[start..end])
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// One number on the page.
#[derive(Debug)]
struct Shown {
    key: String,
    value: String,
    format: String,
    text: String,
}

fn numbers(dom: &str) -> Vec<Shown> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find("<span class=\"num\"") {
        rest = &rest[at..];
        let tag_end = rest.find('>').unwrap();
        let tag = &rest[..tag_end];
        let text_end = rest.find("</span>").unwrap();
        out.push(Shown {
            key: unescape(attribute(tag, "data-key").unwrap()),
            value: unescape(attribute(tag, "data-value").unwrap()),
            format: attribute(tag, "data-format").unwrap().to_string(),
            text: unescape(&rest[tag_end + 1..text_end]),
        });
        rest = &rest[text_end..];
    }
    out
}

/// How the page must show `value` in `format` (the report's rule, written out again here).
fn formatted(value: f64, format: &str) -> String {
    match format {
        "percent1" => format!("{:.1} %", value * 100.0),
        "decimal3" => format!("{value:.3}"),
        "decimal4" => format!("{value:.4}"),
        "count" => format!("{value:.0}"),
        other => panic!("unknown data-format {other}"),
    }
}

/// Everything wrong with a loaded page, checked against `metrics.json`.
fn problems(dom: &str, console: &[String], metrics: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for message in console {
        found.push(format!("console: {message}"));
    }
    for id in common::REPORT_SECTIONS {
        if !dom.contains(&format!("<section id=\"{id}\">")) {
            found.push(format!("section {id} missing"));
        }
    }
    match (
        attribute(dom, "data-images"),
        attribute(dom, "data-images-broken"),
    ) {
        (Some(images), Some("0")) if images.parse::<usize>().unwrap_or(0) >= 6 => {}
        other => found.push(format!("images (loaded, broken): {other:?}")),
    }
    let shown = numbers(dom);
    if shown.len() < 60 {
        found.push(format!("only {} numbers on the page", shown.len()));
    }
    for number in &shown {
        let Some(expected) = metrics.pointer(&number.key) else {
            found.push(format!("{} is not in metrics.json", number.key));
            continue;
        };
        match expected {
            Value::Null => {
                if number.value != "null" || number.text != "n/a" {
                    found.push(format!(
                        "{}: null in metrics.json, page {number:?}",
                        number.key
                    ));
                }
            }
            Value::Number(n) => {
                let expected = n.as_f64().unwrap();
                let value: f64 = number.value.parse().unwrap_or(f64::NAN);
                if value.to_bits() != expected.to_bits() {
                    found.push(format!(
                        "{}: value {} on the page, {expected} in metrics.json",
                        number.key, number.value
                    ));
                }
                let text = formatted(expected, &number.format);
                if number.text != text {
                    found.push(format!(
                        "{}: text {:?} on the page, {text:?} expected",
                        number.key, number.text
                    ));
                }
            }
            other => found.push(format!(
                "{}: not a number in metrics.json: {other}",
                number.key
            )),
        }
    }
    // The headline numbers are on the page, and agree with a recount from the cases.
    for key in [
        "/evaluation/intervals/sensitivity/estimate",
        "/evaluation/intervals/specificity/estimate",
        "/evaluation/intervals/auc/estimate",
        "/summary/prevalence",
        "/evaluation/at_threshold/accuracy",
        "/evaluation/at_threshold/majority_baseline_accuracy",
        "/evaluation/calibration/before/ece",
        "/evaluation/calibration/after/ece",
        "/evaluation/tta/difference/estimate",
    ] {
        if !shown.iter().any(|n| n.key == key) {
            found.push(format!("{key} is not shown"));
        }
    }
    let [tp, fn_, fp, tn] = common::recount_confusion(metrics);
    if common::stated_confusion(metrics) != [tp, fn_, fp, tn] {
        found.push("the confusion matrix does not match the cases".into());
    }
    let stated = |key: &str| metrics.pointer(key).and_then(Value::as_f64);
    if stated("/summary/prevalence") != Some((tp + fn_) as f64 / (tp + fn_ + fp + tn) as f64) {
        found.push("the prevalence does not match the cases".into());
    }
    if stated("/evaluation/at_threshold/specificity") != Some(tn as f64 / (tn + fp) as f64) {
        found.push("the specificity does not match the cases".into());
    }
    found
}

fn report_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("report_browser")
}

#[test]
#[ignore = "needs chromium (apt-get install chromium); .ci/run installs it and runs this test"]
fn report_opens_in_chromium_without_errors_and_matches_its_metrics_json() {
    let data = tempfile::tempdir().unwrap();
    let (mut clf, split) = common::trained_tiny(data.path(), 30, 2);
    clf.set_tta(TtaConfig::standard()).unwrap();
    let evaluation = clf.evaluate(&split.test).unwrap();
    let dir = report_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let files = Report::new(&clf, &evaluation)
        .data_source(DataSource::named(
            "synthetic radiographs (tests/report_browser.rs)",
        ))
        .write(dir.join("report"))
        .unwrap();
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(&files.metrics).unwrap()).unwrap();

    let (dom, console) = load(&files.html);
    let found = problems(&dom, &console, &metrics);
    assert!(
        found.is_empty(),
        "the page has problems:\n{}",
        found.join("\n")
    );

    // A full-page screenshot to look at.
    let height: u32 = attribute(&dom, "data-page-height")
        .unwrap()
        .parse()
        .unwrap();
    let shot = dir.join("screenshot.png");
    run_chromium(
        &files.html,
        &[
            format!("--window-size=1280,{}", height.clamp(600, 16000)),
            format!("--screenshot={}", shot.display()),
        ],
    );
    let picture = image::open(&shot).unwrap();
    assert_eq!(picture.width(), 1280);
    assert!(picture.height() >= 2000, "page height {}", picture.height());
    eprintln!("screenshot: {}", shot.display());

    // The check fails when it must: a missing section, a changed number, a console error.
    let html = std::fs::read_to_string(&files.html).unwrap();
    let section_start = html.find("<section id=\"calibration\">").unwrap();
    let section_end = section_start + html[section_start..].find("</section>").unwrap() + 10;
    let key = html
        .find("data-key=\"/evaluation/intervals/sensitivity/estimate\"")
        .unwrap();
    let text_start = key + html[key..].find('>').unwrap() + 1;
    let text_end = text_start + html[text_start..].find("</span>").unwrap();
    let changed = format!("{}99.9 %{}", &html[..text_start], &html[text_end..]);
    assert_ne!(&html[text_start..text_end], "99.9 %");
    let broken = [
        (
            "without the calibration section",
            format!("{}{}", &html[..section_start], &html[section_end..]),
            "section calibration missing",
        ),
        (
            "with the sensitivity's text changed",
            changed,
            "/evaluation/intervals/sensitivity/estimate: text",
        ),
        (
            "with a console error",
            html.replacen(
                "<main>",
                "<main><script>console.error('broken on purpose')</script>",
                1,
            ),
            "console:",
        ),
    ];
    for (what, page, expected) in broken {
        let path = dir.join("report").join("broken.html");
        std::fs::write(&path, page).unwrap();
        let (dom, console) = load(&path);
        let found = problems(&dom, &console, &metrics);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "a page {what} passed the check: {found:?}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
