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
    /// Every session's Chromium profile, removed with the driver: a profile
    /// Chromium makes for itself stays in /tmp (~7 MB a session) when a
    /// test ends without closing its session.
    profiles: tempfile::TempDir,
    sessions: std::sync::atomic::AtomicUsize,
}

impl Driver {
    pub fn start() -> Driver {
        let port = free_addr().port();
        let profiles = tempfile::tempdir().unwrap();
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            // Its Chromiums in its group, killed with it; their temp files
            // in the profiles dir.
            .process_group(0)
            .env("TMPDIR", profiles.path())
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
            profiles,
            sessions: Default::default(),
        }
    }

    pub async fn browser(&self) -> Browser {
        self.browser_sized(1280, 800).await
    }

    /// A session whose window is `width`×`height` CSS pixels.
    pub async fn browser_sized(&self, width: u32, height: u32) -> Browser {
        let session = self.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = format!(
            "--user-data-dir={}",
            self.profiles.path().join(session.to_string()).display()
        );
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            // Chromium keeps a window at least ~500 px wide: a narrower
            // viewport is emulated, as a phone's.
            if width < 600 {
                json!({
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=800,900", profile],
                    "mobileEmulation": { "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0, "touch": false } },
                })
            } else {
                json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", format!("--window-size={width},{height}"), profile] })
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
    /// Kills chromedriver's whole process group: a Chromium whose session
    /// the test did not close outlives chromedriver otherwise (every
    /// browser test left its Chromium running).
    fn drop(&mut self) {
        // SAFETY: a signal to the group this driver leads.
        let group = -(self.child.id() as i32);
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
        // Until the group is gone, so that no Chromium writes into the
        // profiles dir after it is removed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while unsafe { libc::kill(group, 0) } == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
