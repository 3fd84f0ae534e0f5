//! A real browser for tests: headless Chromium (Debian's `chromium`),
//! driven over the DevTools protocol on one websocket, one page attached
//! in flattened session mode. Killed on drop.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next: u64,
    /// Console and log entries at level "error" seen so far.
    pub errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens one blank page of
    /// `width` × `height` CSS pixels.
    pub fn start(width: u32, height: u32) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium (Debian package `chromium`, installed by scripts/test)");
        let url = devtools_url(&mut child);
        let addr = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("devtools address")
            .to_owned();
        let tcp = TcpStream::connect(&addr).expect("devtools connect");
        // Bounds a hung browser; generous, as Chromium shares a loaded CI machine with etcd and nodes.
        tcp.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), tcp).expect("devtools handshake");
        let mut b = Self {
            child,
            ws,
            session: String::new(),
            next: 0,
            errors: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
        );
        b.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        b.call("Runtime.enable", json!({}));
        b.call("Log.enable", json!({}));
        b.call("Page.enable", json!({}));
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// Sends one command (to the page once attached) and waits for its
    /// result; events read meanwhile are scanned for errors.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("devtools send");
        loop {
            let m = self.ws.read().expect("devtools read");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).expect("devtools json");
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.note(&v);
        }
    }

    fn note(&mut self, v: &Value) {
        let entry = match v["method"].as_str() {
            Some("Log.entryAdded") => &v["params"]["entry"],
            Some("Runtime.exceptionThrown") => &v["params"]["exceptionDetails"],
            _ => return,
        };
        let is_error = entry["level"].as_str().is_none_or(|l| l == "error");
        if is_error {
            self.errors.push(entry.to_string());
        }
    }

    /// Loads `url` and waits until its document is complete.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        let loaded = format!(
            "location.href === {} && document.readyState === 'complete'",
            json!(url)
        );
        assert!(
            self.wait_for(&loaded, Duration::from_secs(10)),
            "{url} never loaded"
        );
    }

    /// Evaluates `js` in the page (promises awaited); its value as JSON.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.try_eval(js);
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    fn try_eval(&mut self, js: &str) -> Value {
        self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        )
    }

    /// Polls `js` until it is `true` (an exception counts as not yet), at
    /// most `limit`.
    pub fn wait_for(&mut self, js: &str, limit: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if self.try_eval(js)["result"]["value"] == json!(true) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// A real mouse click (press and release) at the centre of the element
    /// `selector` finds.
    pub fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const r = document.querySelector({}).getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        );
        let at = self.eval(&js);
        let (x, y) = (at[0].as_f64().expect("x"), at[1].as_f64().expect("y"));
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Types `text` into the focused element, as a keyboard would.
    pub fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    /// A PNG of the page as drawn now.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let data = r["data"].as_str().expect("png data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser-level websocket URL Chromium prints on stderr.
fn devtools_url(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(url) = line.strip_prefix("DevTools listening on ") {
            let url = url.trim().to_owned();
            // Keep draining stderr so Chromium never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return url;
        }
    }
    panic!("chromium printed no DevTools address");
}
