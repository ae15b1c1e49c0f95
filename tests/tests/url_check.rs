//! The running stack's URL check service (kimchi-url-check.socket and its stand-in in
//! tests/stack-up.sh): only root may connect, and it checks every URL itself rather
//! than trusting its peer. That kimchid asks it (and answers 400 for a URL that does
//! not answer) is in templates.rs and hostile_input.rs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;

use kimchi_tests::run;
use serde_json::{json, Value};

/// The socket's path, as kimchi-url-check.socket declares it.
fn socket() -> PathBuf {
    let unit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd/kimchi-url-check.socket");
    std::fs::read_to_string(unit)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("ListenStream="))
        .expect("a ListenStream= line")
        .into()
}

/// One request line, as written, and the service's answer.
fn ask(request: &str) -> Value {
    let mut stream = UnixStream::connect(socket())
        .unwrap_or_else(|e| panic!("{}: {e} (is the stack up?)", socket().display()));
    writeln!(stream, "{request}").unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

#[test]
fn only_root_may_connect_to_the_url_check_socket() {
    let meta = std::fs::metadata(socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Another user's curl cannot even connect (exit 7); root's connects and gets
    // the service's JSON refusal of an HTTP request, which curl cannot read (exit 1).
    let as_nobody = run(Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .args(["curl", "-sS", "--max-time", "10", "--unix-socket"])
        .arg(socket())
        .arg("http://url-check/"));
    assert!(as_nobody.stderr.starts_with("curl: (7)"), "{as_nobody:?}");
}

#[test]
fn the_url_check_service_checks_the_url_itself() {
    for (url, why) in [
        (
            "gopher://127.0.0.1/x.iso",
            "only http, https and ftp images can be streamed",
        ),
        (
            "file:///etc/shadow",
            "only http, https and ftp images can be streamed",
        ),
        (
            "http://user:pw@127.0.0.1/x.iso",
            "credentials in the URL are not supported",
        ),
    ] {
        assert_eq!(
            ask(&json!({ "url": url }).to_string()),
            json!({"outcome": "refused", "reason": format!("cdrom URL '{url}': {why}")}),
            "{url}"
        );
    }
    let answer = ask("{\"url\": \"http://127.0.0.1/x.iso\", \"output\": \"/etc/passwd\"}");
    assert_eq!(answer["outcome"], "refused", "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .starts_with("bad request: unknown field `output`"),
        "{answer}"
    );
}
