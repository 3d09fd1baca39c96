//! The `factcheck serve` binary as a user runs it: no config, a fresh data
//! dir, the admin token it writes, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::{Auth, pb};
use pb::fact_check_service_client::FactCheckServiceClient;
use tonic::transport::Channel;

/// Reads the server's log until it says where it listens.
fn wait_for_address(stderr: &mut impl BufRead) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited before serving"
        );
        if let Some(rest) = line.split("serving addr=").nth(1) {
            return rest.trim().to_owned();
        }
    }
}

// Multi-threaded: the test blocks its thread waiting for the child, while the
// client's connection task must still answer the server's GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_creates_an_admin_token_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_factcheck"))
        .args(["serve", "--listen", "127.0.0.1:0", "--seeds"])
        .arg(crate::common::seeds_dir())
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = wait_for_address(&mut stderr);
    // Keep draining the log so the server never blocks on a full pipe.
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    });

    let token_path = data_dir.join("admin-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&token_path).unwrap().trim().to_owned();
    let tokens_file = std::fs::read_to_string(data_dir.join("tokens.json")).unwrap();
    assert!(!tokens_file.contains(&token), "the tokens file holds hashes only");

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut anonymous = FactCheckServiceClient::new(channel.clone());
    let refused = anonymous
        .list_articles(pb::ListArticlesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let header = format!("Bearer {token}").parse().unwrap();
    let mut admin = FactCheckServiceClient::with_interceptor(channel, Auth::new(Some(header)));
    let articles = admin
        .list_articles(pb::ListArticlesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .articles;
    assert_eq!(articles.len(), 5);
    let created = admin
        .create_annotation(pb::CreateAnnotationRequest {
            parent: "articles/001_728dec46794c22c1".into(),
            annotation: Some(crate::common::new_annotation(
                crate::common::find_span(&crate::common::seed_text("001_728dec46794c22c1"), "조태열"),
                pb::Verdict::Verified,
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.analyst, "admin");
    assert_eq!(created.quote, "조태열");

    drop((admin, anonymous));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let log = log.join().unwrap();
    assert!(exit.success(), "exit {exit:?}, log:\n{log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        !log.contains("grace period"),
        "shutdown waited for the grace period:\n{log}"
    );
}
