//! The live dashboard in real headless Chromium, while the seed workload streams through real
//! Debezium into the replica and Redis: the page loads from Ripple itself, its charts hold
//! non-zero data (changes per second, end-to-end latency), the sinks, lag, recent changes and the
//! last verify's sync status are filled in, and it keeps updating over server-sent events. A
//! screenshot is saved as `target/artifacts/dashboard.png`.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!("no Chromium: `scripts/stack install` installs Debian's chromium package");
}

/// Headless Chromium driven over the DevTools protocol, so the test watches one page stay open
/// and update, as a person would.
struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
}

impl Browser {
    fn open(url: &str, dir: &std::path::Path) -> Browser {
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1440,1000",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.join("chromium-profile").display()
            ))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // Chromium prints where DevTools listens on stderr; the rest of stderr is drained so the
        // pipe never fills.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(ws) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(ws.trim().to_string());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium did not open its DevTools port");
        let port: u16 = browser_ws
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected DevTools address {browser_ws}"));
        let (_, list) = http_get(port, "/json/list");
        let targets: Vec<serde_json::Value> = serde_json::from_str(&list).expect("targets");
        let page = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (ws, _) = tungstenite::connect(page).expect("connect to the page");
        let mut b = Browser {
            child,
            ws,
            next_id: 0,
        };
        b.call("Page.navigate", serde_json::json!({ "url": url }));
        b
    }

    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send to chromium");
        loop {
            let reply = self.ws.read().expect("read from chromium");
            let Ok(text) = reply.to_text() else { continue };
            let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine as _;
        // The whole page, below the fold too.
        let height = self
            .eval("document.documentElement.scrollHeight")
            .as_f64()
            .unwrap_or(1000.0);
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": 1440, "height": height, "scale": 1 },
            }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page shows, read from its elements.
const READ_PAGE: &str = r#"(() => {
  const d = id => document.getElementById(id).dataset;
  const rows = id => document.querySelectorAll(`#${id} tr`).length;
  return {
    snapshots: +document.body.dataset.snapshots,
    rateMax: +d("rate-chart").max, ratePoints: +d("rate-chart").points,
    latencyMax: +d("latency-chart").max, latencyPoints: +d("latency-chart").points,
    applied: +d("k-applied").value, rate: +d("k-rate").value, sinksUp: +d("k-sinks").value,
    recent: rows("recent"), feed: document.getElementById("recent").textContent,
    lagRows: rows("lag"), sinks: document.getElementById("sinks").textContent,
    verify: document.getElementById("verify").textContent,
    connection: document.getElementById("conn").className,
  };
})()"#;

#[test]
fn the_dashboard_shows_live_charts_in_headless_chromium() {
    require_stack();
    let t = unique("e2e_dash");
    let dir = temp_dir(&t);
    let port = 19100 + (std::process::id() % 400) as u16;
    let setup = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--drop", "--setup", "--count", "500",
    ]);
    assert!(setup.status.success(), "loadgen failed: {}", text(&setup));
    let connector = Connector::start(&t.replace('_', "-"), &t, &format!("public.{t}"));
    let topic = connector.topic(&t);
    let extra = format!(
        "\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\n\
         \n[[routes]]\ntopics = [\"{topic}\"]\nsinks = [\"cache\"]\n\
         \n[pipeline]\nbatch_size = 500\n\
         \n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let config = write_config(&dir, std::slice::from_ref(&topic), &t, &extra);
    let run = RippleProcess::start(&config, &[]);
    wait_until(Duration::from_secs(30), "the dashboard", || {
        http_get(port, "/dashboard").0 == 200
    });
    let table = format!("public.{t}");
    wait_verified(&config, &table, 2, Duration::from_secs(60));

    // Changes keep flowing while the page is open.
    let load = std::thread::spawn({
        let t = t.clone();
        move || {
            ripple(&[
                "loadgen", "--url", SOURCE_URL, "--table", &t, "--count", "6000", "--rate", "300",
                "--seed", "9",
            ])
        }
    });
    wait_until(Duration::from_secs(30), "a few seconds of history", || {
        let (_, body) = http_get(port, "/dashboard/history");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).is_ok_and(|h| h.len() >= 8)
    });
    std::thread::sleep(Duration::from_secs(4));

    let url = format!("http://127.0.0.1:{port}/dashboard");
    let mut browser = Browser::open(&url, &dir);
    wait_until(
        Duration::from_secs(30),
        "the page to draw its charts",
        || browser.eval(READ_PAGE)["snapshots"].as_f64().unwrap_or(0.0) >= 8.0,
    );
    let page = browser.eval(READ_PAGE);
    let num = |k: &str| page[k].as_f64().unwrap_or(0.0);
    assert!(
        num("rateMax") > 0.0 && num("ratePoints") >= 3.0,
        "the rate chart is flat: {page}"
    );
    assert!(
        num("latencyMax") > 0.0 && num("latencyPoints") >= 3.0,
        "the latency chart is flat: {page}"
    );
    assert!(num("applied") > 0.0 && num("rate") > 0.0, "{page}");
    assert_eq!(num("sinksUp"), 2.0, "{page}");
    let sinks = page["sinks"].as_str().unwrap();
    assert!(
        sinks.contains("replica") && sinks.contains("cache"),
        "{page}"
    );
    assert!(num("recent") >= 5.0, "{page}");
    assert!(
        page["feed"].as_str().unwrap().contains(&t),
        "the feed names the table: {page}"
    );
    assert!(num("lagRows") >= 1.0, "{page}");
    assert!(
        page["verify"].as_str().unwrap().matches("EQUAL").count() >= 2,
        "the sync panel shows the last verify: {page}"
    );

    // Live: the same open page receives new snapshots and counts over server-sent events.
    std::thread::sleep(Duration::from_secs(4));
    let later = browser.eval(READ_PAGE);
    assert_eq!(later["connection"], "live", "{later}");
    assert!(
        later["snapshots"].as_f64() > page["snapshots"].as_f64()
            || page["snapshots"].as_f64() >= Some(301.0),
        "no new snapshot arrived: {page} then {later}"
    );
    assert!(
        later["applied"].as_f64() > page["applied"].as_f64(),
        "the applied count did not move: {page} then {later}"
    );

    let artifacts = repo().join("target").join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    browser.screenshot(&shot);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    drop(browser);

    assert!(load.join().unwrap().status.success());
    assert!(run.signal("TERM").success());
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
}
