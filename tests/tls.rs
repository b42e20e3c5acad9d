//! Kafka over TLS, end to end against the test suite's real broker. tansu 0.6.0 speaks only
//! plaintext, so the test puts a TLS-terminating proxy (OpenSSL, a certificate made here for
//! 127.0.0.1) in front of it and has tansu advertise the proxy's port: every connection the
//! clients make, bootstrap and fetch alike, then goes through TLS. `viewpulse replay` writes
//! the golden stream through it and `viewpulse run` reads it back through it, both configured
//! only with `-X security.protocol=SSL -X ssl.ca.location=…`; the final snapshot must equal a
//! run over the same file. A client that does not trust the certificate is refused with a
//! message, not served.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslStream};

/// Kills the broker when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed certificate and key for 127.0.0.1 in `dir`, made by the openssl command.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command runs");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Copies bytes both ways between a TLS client and the plaintext broker until either closes.
/// Both sockets wait at most 2 ms for a read, so one thread serves both directions.
fn pump(mut tls: SslStream<TcpStream>, mut plain: TcpStream) {
    let tick = Some(Duration::from_millis(2));
    if tls.get_ref().set_read_timeout(tick).is_err() || plain.set_read_timeout(tick).is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let idle = |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if plain.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
        match plain.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tls.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
    }
}

/// A TLS proxy on `listener` to the broker at `backend`, a thread per connection.
fn proxy(listener: TcpListener, backend: String, cert: &Path, key: &Path) {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    b.set_certificate_chain_file(cert).expect("certificate");
    b.set_private_key_file(key, SslFiletype::PEM).expect("key");
    let acceptor = b.build();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let acceptor = acceptor.clone();
            let backend = backend.clone();
            std::thread::spawn(move || {
                // a client that refuses the certificate ends its handshake here
                let Ok(tls) = acceptor.accept(conn) else {
                    return;
                };
                if let Ok(plain) = TcpStream::connect(&backend) {
                    pump(tls, plain);
                }
            });
        }
    });
}

fn viewpulse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(args)
        .env("VIEWPULSE_NO_PROGRESS", "1")
        .output()
        .expect("viewpulse runs")
}

fn ok(args: &[&str]) {
    let out = viewpulse(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The last snapshot of a JSON-lines file, without its time.
fn last_snapshot(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("snapshots");
    let line = text.lines().last().expect("a snapshot");
    let mut v: serde_json::Value = serde_json::from_str(line).expect("JSON");
    let o = v.as_object_mut().expect("an object");
    for k in ["emitted_at", "trigger", "offsets"] {
        o.remove(k);
    }
    v
}

#[test]
fn replay_and_run_over_tls_give_the_file_run_s_snapshot_and_an_untrusted_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = certificate(dir.path(), "broker");
    let (other, _) = certificate(dir.path(), "other");
    let (broker_port, tls_port) = (common::free_port(), common::free_port());
    let _broker = Killed(
        Command::new(common::tansu())
            .args([
                "broker",
                "--storage-engine=memory://tansu/",
                &format!("--listener-url=tcp://127.0.0.1:{broker_port}"),
                &format!("--advertised-listener-url=tcp://127.0.0.1:{tls_port}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu starts"),
    );
    let backend = format!("127.0.0.1:{broker_port}");
    common::wait_for(30, "tansu listens", || TcpStream::connect(&backend).is_ok());
    let listener = TcpListener::bind(("127.0.0.1", tls_port)).expect("the TLS port");
    proxy(listener, backend, &cert, &key);

    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    let views = golden.join("input/views_stream.csv");
    let (model, views) = (golden.to_str().unwrap(), views.to_str().unwrap());
    let url = format!("kafka://127.0.0.1:{tls_port}/views");
    let ca = format!("ssl.ca.location={}", cert.display());
    let tls = ["-X", "security.protocol=SSL", "-X", &ca];

    let mut args = vec!["replay", "--file", views, "--to", &url, "--partitions", "2"];
    args.extend(tls);
    ok(&args);

    let (over_tls, from_file) = (dir.path().join("tls.jsonl"), dir.path().join("file.jsonl"));
    let run = |source: &str, out: &Path, extra: &[&str]| -> Output {
        let mut a = vec!["run", "--model", model, "--source", source, "--until-end"];
        a.extend(["--no-stdout", "--startup-wait", "5s", "--snapshots"]);
        a.push(out.to_str().unwrap());
        a.extend(extra);
        viewpulse(&a)
    };
    let out = run(&url, &over_tls, &tls);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&[
        "run",
        "--model",
        model,
        "--source",
        views,
        "--until-end",
        "--no-stdout",
        "--snapshots",
        from_file.to_str().unwrap(),
    ]);
    let (got, want) = (last_snapshot(&over_tls), last_snapshot(&from_file));
    assert!(want["records"].as_u64().unwrap_or(0) > 0, "{want}");
    assert_eq!(got, want, "the snapshot read over TLS");

    // the same broker with a certificate the client does not trust: refused, named
    let untrusted = format!("ssl.ca.location={}", other.display());
    let out = run(
        &url,
        &dir.path().join("refused.jsonl"),
        &["-X", "security.protocol=SSL", "-X", &untrusted],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an untrusted broker was read: {err}");
    assert!(
        err.lines().any(|l| l.contains("error:")
            && l.contains(&format!("127.0.0.1:{tls_port}"))
            && l.contains("certificate verify failed")),
        "one error line names the broker and the reason: {err}"
    );
}
