//! The static_server program: flags, serving, and graceful shutdown on SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

fn start(args: &[&str]) -> (std::process::Child, String) {
    common::start(env!("CARGO_BIN_EXE_static_server"), args)
}

fn raw_get(address: &str, path: &str, extra: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn serves_a_folder_with_caflax_flags_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello").unwrap();
    let folder = dir.path().to_str().unwrap();
    let (mut child, address) = start(&[
        "-p",
        "0",
        "-H",
        "127.0.0.1",
        "-d",
        folder,
        "--spa",
        "--cors",
        "--quiet",
    ]);

    let file = raw_get(&address, "/hello.txt", "Origin: http://example.test\r\n");
    assert!(file.starts_with("HTTP/1.1 200 OK"), "{file}");
    assert!(file.contains("access-control-allow-origin: *"), "{file}");
    assert!(file.contains("cache-control: no-cache"), "{file}");
    assert!(file.ends_with("\r\n\r\nhello"), "{file}");

    let spa = raw_get(&address, "/some/client/route", "");
    assert!(
        spa.starts_with("HTTP/1.1 200 OK") && spa.ends_with("<h1>home</h1>"),
        "{spa}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        child.wait().unwrap().success(),
        "exits cleanly after SIGTERM"
    );
}

#[test]
fn production_mode_answers_from_memory_with_a_positional_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.js"), "let x = 1;\n".repeat(200)).unwrap();
    let (mut child, address) =
        start(&["-p", "0", "--prod", "--quiet", dir.path().to_str().unwrap()]);
    let plain = raw_get(&address, "/app.js", "");
    assert!(plain.contains("content-length: 2200"), "{plain}");
    let gzip = raw_get(&address, "/app.js", "Accept-Encoding: gzip\r\n");
    assert!(
        gzip.contains("content-encoding: gzip") && gzip.contains("vary: accept-encoding"),
        "{gzip}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn version_flag_prints_the_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_static_server"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn asset_manifest_writes_what_the_layer_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("js")).unwrap();
    std::fs::write(dir.path().join("js/app.js"), "let x = 1;").unwrap();
    let output = dir.path().join("manifest.json");
    let status = Command::new(env!("CARGO_BIN_EXE_asset_manifest"))
        .arg(dir.path().join("js"))
        .arg("-o")
        .arg(&output)
        .status()
        .unwrap();
    assert!(status.success());
    let manifest = proxflow_static::AssetManifest::load(&output).unwrap();
    let versioned = manifest.get("app.js").unwrap();
    assert!(
        versioned.starts_with("app.") && versioned.ends_with(".js") && versioned.len() == 15,
        "{versioned}"
    );
}
