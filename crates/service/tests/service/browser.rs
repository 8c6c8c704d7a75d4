//! The browser-test harness: a real Chromium (Debian's `chromium` and `chromium-driver`) driven
//! over WebDriver with `fantoccini`.
//!
//! [`Browser::start`] launches `chromedriver` on a free loopback port and opens a headless
//! Chromium session with a fresh profile (`--user-data-dir` in a temporary directory). Without
//! `/usr/bin/chromedriver` (or `CHROMEDRIVER`) a test gets `None` after printing why it is
//! skipped, unless `BYTE8_REQUIRE_BROWSER=1` is set (as `.ci/run` does, after installing the
//! packages), where that is a failure. [`Browser::shot`] saves a PNG of the page under
//! `target/browser-screenshots/TEST/NN-NAME.png` and returns its path.
//!
//! Use:
//!
//! ```ignore
//! let Some(browser) = Browser::start("console_login").await else { return };
//! browser.goto(&format!("{base}/console/login")).await;
//! browser.fill("#name", "ada").await;
//! browser.click("button[type=submit]").await;
//! browser.shot("overview").await;
//! browser.close().await;
//! ```
#![allow(dead_code)]

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::json;

/// The environment variable that makes a missing browser a failure.
pub const REQUIRE_ENV: &str = "BYTE8_REQUIRE_BROWSER";

/// A headless Chromium under chromedriver, for one test.
pub struct Browser {
    client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
    count: AtomicUsize,
}

fn chromedriver() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMEDRIVER") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from("/usr/bin/chromedriver");
    p.exists().then_some(p)
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// `target/` of this build (the test binary is `target/debug/deps/service-…`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::temp_dir().join("byte8-target"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Browser {
    /// A browser for test `test`, or `None` (printed) when chromedriver is not installed and
    /// [`REQUIRE_ENV`] is not set.
    pub async fn start(test: &str) -> Option<Self> {
        let Some(driver_path) = chromedriver() else {
            assert!(
                std::env::var_os(REQUIRE_ENV).is_none(),
                "{test}: {REQUIRE_ENV} is set but chromedriver is not installed (apt-get install chromium chromium-driver)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "{test}: skipped (no /usr/bin/chromedriver: apt-get install chromium chromium-driver, or set CHROMEDRIVER)"
            );
            return None;
        };
        let port = free_port();
        let driver = tokio::process::Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{test}: cannot start {}: {e}", driver_path.display()));
        let url = format!("http://127.0.0.1:{port}");
        // Ready when its status answers (bounded: 200 tries, 100 ms apart).
        let http = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..200 {
            if http.get(format!("{url}/status")).send().await.is_ok_and(|r| r.status().is_success()) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "{test}: chromedriver did not come up on {url}");
        let profile = tempfile::tempdir().expect("a profile directory");
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium().display().to_string(), "args": args }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot open a Chromium session: {e}"));
        let shots = target_dir().join("browser-screenshots").join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("the screenshot directory");
        Some(Self { client, driver, _profile: profile, shots, count: AtomicUsize::new(0) })
    }

    /// The WebDriver client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The current URL.
    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.expect("current url")
    }

    /// Waits (up to 10 s) until the page's path is `path` (after a click that navigates), and
    /// fails the test with the path it is on otherwise.
    pub async fn wait_path(&self, path: &str) {
        for _ in 0..100 {
            if self.url().await.path() == path
                && self
                    .client
                    .execute("return document.readyState", vec![])
                    .await
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .as_deref()
                    == Some("complete")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the browser is on {} (expected {path})", self.url().await);
    }

    /// The element of CSS `selector` (waits for it up to the driver's wait, 10 s).
    pub async fn find(&self, selector: &str) -> Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("no element {selector}: {e}"))
    }

    /// Scrolls the element of `selector` to the middle of the window (before a screenshot).
    pub async fn scroll_to(&self, selector: &str) {
        let e = self.find(selector).await;
        let arg = serde_json::to_value(&e).expect("an element reference");
        self.client
            .execute("arguments[0].scrollIntoView({block: 'center'});", vec![arg])
            .await
            .unwrap_or_else(|err| panic!("scroll to {selector}: {err}"));
    }

    /// Whether an element of `selector` is on the page now.
    pub async fn has(&self, selector: &str) -> bool {
        self.client.find(Locator::Css(selector)).await.is_ok()
    }

    /// Types `text` into the (cleared) field of `selector`.
    pub async fn fill(&self, selector: &str, text: &str) {
        let e = self.find(selector).await;
        e.clear().await.unwrap_or_else(|err| panic!("clear {selector}: {err}"));
        e.send_keys(text).await.unwrap_or_else(|err| panic!("type into {selector}: {err}"));
    }

    /// Chooses the option of value `value` in the `<select>` of `selector`.
    pub async fn select(&self, selector: &str, value: &str) {
        self.find(selector)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("select {value} in {selector}: {e}"));
    }

    /// Clicks the element of `selector` (found again when a refresh replaced it meanwhile).
    pub async fn click(&self, selector: &str) {
        for _ in 0..STALE_RETRIES {
            match self.find(selector).await.click().await {
                Ok(_) => return,
                Err(e) if e.is_stale_element_reference() => {}
                Err(e) => panic!("click {selector}: {e}"),
            }
        }
        panic!("click {selector}: the element was replaced {STALE_RETRIES} times in a row");
    }

    /// The visible text of the element of `selector` (found again when a refresh replaced it
    /// between finding and reading: the console's live counts are swapped as they refresh).
    pub async fn text(&self, selector: &str) -> String {
        for _ in 0..STALE_RETRIES {
            match self.find(selector).await.text().await {
                Ok(text) => return text,
                Err(e) if e.is_stale_element_reference() => {}
                Err(e) => panic!("text of {selector}: {e}"),
            }
        }
        panic!("text of {selector}: the element was replaced {STALE_RETRIES} times in a row");
    }

    /// The page's HTML.
    pub async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// Saves a screenshot as `NN-name.png` under `target/browser-screenshots/TEST/`.
    pub async fn shot(&self, name: &str) -> PathBuf {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot {name} is not a PNG");
        let path = self.shots.join(format!("{n:02}-{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// The directory of this test's screenshots.
    pub fn shots_dir(&self) -> &Path {
        &self.shots
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

/// How often [`Browser::click`] and [`Browser::text`] find an element again after it was
/// replaced (a stale element reference) before they give up.
const STALE_RETRIES: usize = 5;
