//! The `/ui` page in a real browser (headless Chromium over the DevTools
//! protocol) against `vpcbox run --demo`: the flooder tops the clients
//! table within seconds; with the admin token typed in once, a mouse click
//! on its isolate button isolates it (state isolated, rate 0); the page
//! runs under its Content-Security-Policy without a single error.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::support::{bin, eventually, repo, write_config, Running};

pub const FLOODER: &str = "mac:02:00:00:00:00:01";

/// The shipped subnet, whose trusted relay is the demo's.
pub const DEMO_SUBNET: &str = r#"
[[subnet]]
id = "lab"
cidr = "10.0.0.0/24"
pools = ["10.0.0.100-10.0.0.199"]
gateway = "10.0.0.1"
dns = ["10.0.0.1"]
relays = ["127.0.0.2"]
"#;

/// `vpcbox run --headless --demo` on `cfg`.
pub fn start_demo(cfg: &std::path::Path) -> Running {
    let child = Command::new(bin())
        .args(["run", "--headless", "--demo", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vpcbox");
    Running { child }
}

pub fn healthy(http: u16) -> bool {
    eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", http)).is_ok()
    })
}

fn first_row_is(client: &str) -> String {
    format!(
        "(() => {{ const r = document.querySelector('#clients tbody tr'); \
         return r !== null && r.dataset.client === {}; }})()",
        json!(client)
    )
}

fn row_of(client: &str) -> String {
    format!(
        "document.querySelector('#clients tbody tr[data-client={}]')",
        json!(client)
    )
}

#[test]
fn the_flooder_tops_the_page_and_one_click_isolates_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), DEMO_SUBNET);
    let _vb = start_demo(&cfg);
    assert!(healthy(http));
    let token = std::fs::read_to_string(dir.path().join("data/admin.token"))
        .expect("token")
        .trim()
        .to_owned();

    let mut b = Browser::start(1400, 1000);
    b.navigate(&format!("http://127.0.0.1:{http}/ui"));
    assert!(
        b.wait_for(
            "document.getElementById('conn').textContent === 'live'",
            Duration::from_secs(10)
        ),
        "the page never went live"
    );
    // Without the token: aggregates only, no client identities.
    assert!(b.wait_for(
        "document.getElementById('rate-dhcp').textContent !== '–'",
        Duration::from_secs(5)
    ));
    assert_eq!(
        b.eval("document.querySelectorAll('#clients tbody tr').length"),
        json!(0)
    );

    // The token, typed once into the page's field.
    b.click("#token");
    b.type_text(&token);
    b.click("#token-save");
    assert_eq!(
        b.eval("sessionStorage.getItem('vpcbox.token') !== null && document.cookie === ''"),
        json!(true)
    );
    assert!(
        b.wait_for(&first_row_is(FLOODER), Duration::from_secs(10)),
        "the flooder is not the top row: {}",
        b.eval("document.querySelector('#clients tbody').innerText")
    );
    assert!(b.wait_for(
        "document.querySelector('#subnets tbody').innerText.includes('10.0.0.0/24')",
        Duration::from_secs(5)
    ));

    // Filter and sort as in the dashboard.
    b.click("#filter");
    b.type_text("02:00:00:00:00:01");
    assert!(b.wait_for(
        "[...document.querySelectorAll('#clients tbody tr')].map(r => r.dataset.client).join() \
         === 'mac:02:00:00:00:00:01,'",
        Duration::from_secs(5)
    ), "the filter keeps the flooder and \"others\" only");
    b.eval(
        "(() => { const f = document.getElementById('filter'); f.value = ''; \
            f.dispatchEvent(new Event('input')); })()",
    );
    b.click("th[data-sort=client]");
    let sorted = "(() => { const c = [...document.querySelectorAll('#clients tbody tr')] \
        .map(r => r.dataset.client).filter(c => c !== ''); \
        return c.length > 10 && c.every((x, i) => i === 0 || c[i - 1] <= x); })()";
    assert!(
        b.wait_for(sorted, Duration::from_secs(5)),
        "sorted by client"
    );
    b.click("th[data-sort=rate_10s]");
    assert!(b.wait_for(&first_row_is(FLOODER), Duration::from_secs(5)));

    // One mouse click on its isolate button.
    let button = format!("#clients tbody tr[data-client=\"{FLOODER}\"] button");
    b.click(&button);
    let isolated_at_zero = format!(
        "(() => {{ const r = {}; return r !== null && r.dataset.state === 'isolated' \
         && r.cells[1].textContent === '0.0'; }})()",
        row_of(FLOODER)
    );
    assert!(
        b.wait_for(&isolated_at_zero, Duration::from_secs(10)),
        "not isolated at rate 0: {}",
        b.eval(&format!("{}?.innerText", row_of(FLOODER)))
    );
    assert!(b.wait_for(
        "document.getElementById('events').innerText.includes('mac:02:00:00:00:00:01')",
        Duration::from_secs(5)
    ));
    assert_eq!(
        b.eval("document.getElementById('isolated').textContent"),
        json!("1")
    );
    assert!(b.wait_for(
        "document.querySelector('#chart-dhcp') !== null",
        Duration::from_secs(1)
    ));

    let png = b.screenshot();
    let out = repo().join("target/ui-browser.png");
    std::fs::write(&out, &png).expect("write screenshot");
    assert!(png.len() > 10_000, "a drawn page, {} bytes", png.len());
    let csp: Vec<&String> = b
        .errors
        .iter()
        .filter(|e| !e.contains("favicon.ico"))
        .collect();
    assert!(csp.is_empty(), "errors in the page: {csp:?}");
}
