//! Headless Chromium over WebDriver: `chromedriver` on a free port and
//! browser sessions at 1280×800 (or another size, for the phone layout). Shared by `tests/browser.rs` and
//! `benches/render.rs`; needs `chromium` and `chromium-driver`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client as Browser, ClientBuilder};
use serde_json::json;

/// A free loopback port, for a server that must come back on the same one.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `chromedriver` on a free port, killed on drop.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Driver {
    pub fn start() -> Driver {
        let port = free_addr().port();
        let mut child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: apt-get install chromium chromium-driver");
        use std::io::BufRead;
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        for line in stdout.lines() {
            if line.unwrap().contains("started successfully") {
                break;
            }
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn browser(&self) -> Browser {
        self.browser_sized(1280, 800).await
    }

    /// A session whose window is `width`×`height` CSS pixels.
    pub async fn browser_sized(&self, width: u32, height: u32) -> Browser {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            // Chromium keeps a window at least ~500 px wide: a narrower
            // viewport is emulated, as a phone's.
            if width < 600 {
                json!({
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=800,900"],
                    "mobileEmulation": { "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0, "touch": false } },
                })
            } else {
                json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", format!("--window-size={width},{height}")] })
            },
        );
        let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap();
        // Waits in the page (`execute_async`) give up after this: a hang
        // fails, it does not block the suite.
        browser
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(std::time::Duration::from_secs(20)),
                None,
                None,
            ))
            .await
            .unwrap();
        browser
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
