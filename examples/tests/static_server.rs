//! The static_server program: flags, serving, the access log, and graceful shutdown on SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

fn start(args: &[&str]) -> (Child, String) {
    common::start(env!("CARGO_BIN_EXE_static_server"), args)
}

/// Starts the server with stderr piped (not a terminal), as a log collector would.
fn start_logged(args: &[&str]) -> (Child, String) {
    common::start_with_stderr(env!("CARGO_BIN_EXE_static_server"), args, Stdio::piped())
}

/// Stops the server with SIGTERM and returns what it wrote on stderr.
fn stop(mut child: Child) -> String {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");
    stderr
}

fn folder_with_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello").unwrap();
    std::fs::write(dir.path().join("404.html"), "<h1>no such page</h1>").unwrap();
    dir
}

fn raw_get(address: &str, path: &str, extra: &str) -> String {
    raw_request(address, "GET", path, extra)
}

/// Sends `METHOD path` with `extra` header lines and returns the raw response.
fn raw_request(address: &str, method: &str, path: &str, extra: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
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

#[test]
fn help_describes_the_server_and_its_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_static_server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.starts_with("Serves the files of a folder over HTTP"),
        "{help}"
    );
    assert!(!help.contains(env!("CARGO_PKG_DESCRIPTION")), "{help}");
    for flag in [
        "-p, --port",
        "-H, --host",
        "-d, --dir",
        "--spa",
        "--cors",
        "--no-cache",
        "--prod",
        "--not-found <FILE>",
        "--quiet",
        "static_server -p 3000 -H 0.0.0.0 -d ./public",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn not_found_flag_sends_the_page_with_status_404() {
    let dir = folder_with_files();
    let folder = dir.path().to_str().unwrap();
    let (child, address) = start_logged(&["-p", "0", "--quiet", "--not-found", "404.html", folder]);
    let missing = raw_get(&address, "/missing.txt", "");
    assert!(missing.starts_with("HTTP/1.1 404 Not Found"), "{missing}");
    assert!(missing.contains("content-type: text/html"), "{missing}");
    assert!(
        missing.ends_with("\r\n\r\n<h1>no such page</h1>"),
        "{missing}"
    );
    let file = raw_get(&address, "/hello.txt", "");
    assert!(
        file.starts_with("HTTP/1.1 200 OK") && file.ends_with("hello"),
        "{file}"
    );
    stop(child);
}

#[test]
fn not_found_flag_refuses_a_page_outside_the_folder_or_missing() {
    let dir = folder_with_files();
    let folder = dir.path().to_str().unwrap();
    for page in ["../secret.html", "missing.html"] {
        let output = Command::new(env!("CARGO_BIN_EXE_static_server"))
            .args(["-p", "0", "--not-found", page, folder])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{page}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("static_server: --not-found: "),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn logs_one_plain_line_per_request() {
    let dir = folder_with_files();
    let folder = dir.path().to_str().unwrap();
    // The plain file service and the router that --cors puts in front of it both log.
    for extra in [None, Some("--cors")] {
        let mut args = vec!["-p", "0", "-d", folder];
        args.extend(extra);
        let (child, address) = start_logged(&args);
        raw_get(&address, "/hello.txt", "");
        raw_get(&address, "/missing.txt", "");
        let log = stop(child);
        assert!(!log.contains('\x1b'), "ANSI codes in a pipe: {log:?}");
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| line.contains(" access: "))
            .collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(
            lines[0].contains("127.0.0.1:")
                && lines[0].contains("\"GET /hello.txt HTTP/1.1\" 200 5 "),
            "{log}"
        );
        assert!(
            lines[1].contains("\"GET /missing.txt HTTP/1.1\" 404 "),
            "{log}"
        );
        assert!(lines.iter().all(|line| line.ends_with("ms")), "{log}");
    }
}

#[test]
fn quiet_logs_no_requests() {
    let dir = folder_with_files();
    let folder = dir.path().to_str().unwrap();
    for extra in [None, Some("--cors")] {
        let mut args = vec!["-p", "0", "--quiet", "-d", folder];
        args.extend(extra);
        let (child, address) = start_logged(&args);
        let file = raw_get(&address, "/hello.txt", "");
        assert!(file.starts_with("HTTP/1.1 200 OK"), "{file}");
        let log = stop(child);
        assert!(!log.contains("hello.txt"), "{log}");
        assert!(!log.contains('\x1b'), "{log:?}");
    }
}

/// The value of header `name` (lowercase) in a raw response head.
fn header_of<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next().unwrap();
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn compress_gives_each_coding_its_own_etag_and_consistent_answers() {
    let dir = tempfile::tempdir().unwrap();
    let script: String = (0..400)
        .map(|i| format!("console.log('line {i} of a compressible script');\n"))
        .collect();
    std::fs::write(dir.path().join("app.js"), &script).unwrap();
    let folder = dir.path().to_str().unwrap();
    let (child, address) = start_logged(&["-p", "0", "-d", folder, "--compress", "--quiet"]);

    let gzip = raw_request(&address, "GET", "/app.js", "Accept-Encoding: gzip\r\n");
    assert!(gzip.starts_with("HTTP/1.1 200 OK"), "{gzip}");
    assert_eq!(header_of(&gzip, "content-encoding"), Some("gzip"));
    assert_eq!(header_of(&gzip, "vary"), Some("accept-encoding"));
    let br = raw_request(&address, "GET", "/app.js", "Accept-Encoding: br\r\n");
    assert_eq!(header_of(&br, "content-encoding"), Some("br"));
    let gzip_tag = header_of(&gzip, "etag").unwrap();
    let br_tag = header_of(&br, "etag").unwrap();
    assert_ne!(gzip_tag, br_tag);

    let conditional = format!("Accept-Encoding: gzip\r\nIf-None-Match: {gzip_tag}\r\n");
    let not_modified = raw_request(&address, "GET", "/app.js", &conditional);
    assert!(not_modified.starts_with("HTTP/1.1 304"), "{not_modified}");
    assert_eq!(header_of(&not_modified, "vary"), Some("accept-encoding"));
    assert_eq!(header_of(&not_modified, "etag"), Some(gzip_tag));
    assert!(
        not_modified.ends_with("\r\n\r\n"),
        "no body: {not_modified}"
    );

    let head = raw_request(&address, "HEAD", "/app.js", "Accept-Encoding: gzip\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    for name in ["content-encoding", "vary", "etag", "content-length"] {
        assert_eq!(header_of(&head, name), header_of(&gzip, name), "{name}");
    }

    let range = raw_request(
        &address,
        "GET",
        "/app.js",
        "Accept-Encoding: gzip\r\nRange: bytes=0-9\r\n",
    );
    assert!(range.starts_with("HTTP/1.1 206"), "{range}");
    assert_eq!(header_of(&range, "content-encoding"), Some("gzip"));
    assert_eq!(header_of(&range, "etag"), Some(gzip_tag));
    let gzip_len = header_of(&gzip, "content-length").unwrap();
    let expected = format!("bytes 0-9/{gzip_len}");
    assert_eq!(header_of(&range, "content-range"), Some(expected.as_str()));

    let multi = raw_request(
        &address,
        "GET",
        "/app.js",
        "Accept-Encoding: gzip\r\nRange: bytes=0-4,10-14\r\n",
    );
    assert!(multi.starts_with("HTTP/1.1 206"), "{multi}");
    assert_eq!(header_of(&multi, "content-encoding"), None, "{multi}");
    assert!(multi.contains(&script[0..5]), "{multi}");
    assert!(multi.contains(&script[10..15]), "{multi}");
    stop(child);
}
