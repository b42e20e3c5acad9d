//! The live page in a real browser: headless Chromium (Debian's `chromium`, installed by the
//! test command), driven through its DevTools protocol over a WebSocket, loads the daemon's
//! `GET /` while the daemon counts a live topic on Apache Kafka. The page must show trigger N
//! with the top-K tables and diff-rank bars, then trigger N+1 when more records come, without
//! a reload (a marker set in the page's window survives), all with no external asset. The
//! screenshot it takes is the README's (`assets/live-page.png` is a copy of one).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn golden() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden")
}

/// A DevTools session on one page.
struct Page {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next: u64,
}

impl Page {
    /// Send `method` with `params` and wait for its answer (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(tungstenite::Message::Text(msg.into()))
            .unwrap();
        loop {
            let m = self.ws.read().unwrap();
            let tungstenite::Message::Text(t) = m else {
                continue;
            };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Wait until `expression` is `want`.
    fn wait_for(&mut self, secs: u64, expression: &str, want: &Value) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.eval(expression);
            if &got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{expression} is {got}, not {want}, after {secs} s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Headless Chromium with a DevTools port, and the WebSocket address of its first page.
fn chromium(profile: &std::path::Path) -> (Child, String) {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium (apt-get install chromium; the test command installs it)");
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"; the rest of its
    // stderr is drained, so that a full pipe never stops it
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap_or_default().to_string());
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("chromium said no DevTools address");
    let addr = format!("127.0.0.1:{port}");
    let mut page = None;
    common::wait_for(30, "chromium's first page", || {
        let Some(body) = devtools_get(&addr, "/json/list") else {
            return false;
        };
        let list: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        page = list.as_array().and_then(|l| {
            l.iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
        });
        page.is_some()
    });
    (child, page.unwrap())
}

#[test]
fn the_live_page_follows_the_triggers_without_a_reload() {
    let broker = common::Broker::start();
    let records = common::lines(&golden().join("input/views_stream.csv"));
    broker.create_topic("live-page", 1);
    broker.produce("live-page", &records[..1000], common::household_key);
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", common::free_port());
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(["--log", "warn", "run", "--model"])
        .arg(golden())
        .args([
            "--source",
            &broker.url("live-page"),
            "--trigger-records",
            "500",
            "--subsets",
            "all,3",
            "--no-stdout",
            "--http-listen",
            &http,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for(60, "two triggers", || {
        common::http_get(&http, "/healthz").is_ok_and(|(_, b)| b.contains(r#""triggers":2"#))
    });
    // the page has no external asset: nothing but its own origin is named in it
    let (code, html) = common::http_get(&http, "/").unwrap();
    assert_eq!(code, 200);
    assert!(html.contains("EventSource(\"events\")"), "{html}");
    for external in ["http://", "https://", "//cdn", "<link", "src="] {
        assert!(!html.contains(external), "the page names {external}");
    }

    let (mut browser, ws) = chromium(&dir.path().join("profile"));
    let (socket, _) = tungstenite::connect(ws.as_str()).unwrap();
    let mut page = Page {
        ws: socket,
        next: 0,
    };
    page.call("Page.enable", json!({}));
    page.call("Page.navigate", json!({"url": format!("http://{http}/")}));
    page.wait_for(
        30,
        "document.getElementById('trigger').textContent",
        &json!("2"),
    );
    page.wait_for(
        10,
        "document.getElementById('state').textContent",
        &json!("live"),
    );
    // the tables: every subset and cluster, with bars; the first row is the snapshot's
    let (_, snap) = common::http_get(&http, "/snapshot").unwrap();
    let snap: Value = serde_json::from_str(&snap).unwrap();
    let first = &snap["subsets"]["3"][0];
    let row = page.eval(&format!(
        "[...document.querySelector('table[data-subset=\"3\"][data-cluster=\"{}\"] tbody tr').children].map(td => td.textContent)",
        first["cluster"]
    ));
    assert_eq!(row[0], json!(first["rank"].to_string()), "{row}");
    assert_eq!(row[1], first["station_num"], "{row}");
    assert_eq!(
        row[2],
        json!(format!("{:.2}", first["diff_rank"].as_f64().unwrap())),
        "{row}"
    );
    let tables = page.eval("document.querySelectorAll('table[data-subset]').length");
    let clusters: std::collections::BTreeSet<(String, u64)> = snap["subsets"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(s, rows)| {
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| (s.clone(), r["cluster"].as_u64().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(tables, json!(clusters.len()));
    let bars = page.eval("document.querySelectorAll('span.b').length");
    let rows: usize = snap["subsets"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r.as_array().unwrap().len())
        .sum();
    assert_eq!(bars, json!(rows));
    assert_eq!(
        page.eval("document.getElementById('records').textContent"),
        json!("1,000")
    );

    // more records: trigger 3 arrives in the same page, not reloaded
    page.eval("window.viewpulseMarker = 42");
    broker.produce("live-page", &records[1000..1500], common::household_key);
    page.wait_for(
        60,
        "document.getElementById('trigger').textContent",
        &json!("3"),
    );
    assert_eq!(
        page.eval("window.viewpulseMarker"),
        json!(42),
        "the page was reloaded"
    );
    assert_eq!(
        page.eval("document.getElementById('records').textContent"),
        json!("1,500")
    );

    let shot = page.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = decode64(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-page.png");
    std::fs::write(&out, &png).unwrap();
    eprintln!("screenshot: {}", out.display());

    let _ = browser.kill();
    let _ = browser.wait();
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    assert!(daemon.wait().unwrap().success());
}

/// `GET path` from Chromium's DevTools HTTP server, which keeps the connection open: the
/// body, read to its `Content-Length`.
fn devtools_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line
            .to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().to_string())
        {
            len = v.parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

/// Standard base64 (the screenshot's encoding).
fn decode64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk.iter().fold(0u32, |acc, &c| {
            (acc << 6) | if c == b'=' { 0 } else { val(c) }
        });
        let n = n << (6 * (4 - chunk.len()));
        let b = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&b[..3 - pad.min(2)]);
    }
    out
}
