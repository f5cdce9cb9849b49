//! A headless Chromium driven through chromedriver (with fantoccini), for the tests that check
//! pages as people use them: the console's and the settings form's.
//!
//! The browser is `B24ACT_CHROMIUM` (default `/usr/bin/chromium`) driven by
//! `B24ACT_CHROMEDRIVER` (default `/usr/bin/chromedriver`); `.ci/run` installs Debian's
//! packages and sets both. Without them a browser test says it skips, except under `CI`, where a
//! missing browser fails. `B24ACT_SCREENSHOTS=1` saves screenshots into `docs/`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// The browser and its driver, or why the test cannot have them.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session through it; `None`
    /// (said on stderr, naming `test`) when either is missing outside CI.
    pub async fn start(test: &str) -> Option<Browser> {
        let chromium =
            std::env::var("B24ACT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let chromedriver = std::env::var("B24ACT_CHROMEDRIVER")
            .unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
        let missing: Vec<&str> = [chromium.as_str(), chromedriver.as_str()]
            .into_iter()
            .filter(|path| !std::path::Path::new(path).exists())
            .collect();
        if !missing.is_empty() {
            let under_ci = std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false");
            assert!(
                !under_ci,
                "CI must run the browser test, but {missing:?} is missing: .ci/run installs chromium and chromium-driver"
            );
            eprintln!(
                "SKIPPED {test}: {missing:?} missing (apt-get install chromium chromium-driver, or set B24ACT_CHROMIUM and B24ACT_CHROMEDRIVER)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1100", "--lang=en-US"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) => {
                    assert!(Instant::now() < deadline, "no WebDriver session: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Some(Browser { client, driver })
    }

    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Waits for an element to appear (after a form's submission loads the next page).
    pub async fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The element can go stale between finding and reading it while the page still
            // navigates: look again.
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never appeared on {}: {}",
                self.client.current_url().await.unwrap(),
                self.client.source().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves the page as `docs/<name>` when `B24ACT_SCREENSHOTS=1`.
    pub async fn screenshot(&self, name: &str) {
        if std::env::var("B24ACT_SCREENSHOTS").as_deref() != Ok("1") {
            return;
        }
        let png = self.client.screenshot().await.unwrap();
        let path = format!("{}/../../docs/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(&path, png).unwrap();
    }

    pub async fn close(self) {
        self.client.clone().close().await.unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
