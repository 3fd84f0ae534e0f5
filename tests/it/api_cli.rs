//! The admin CLI against a live listener: tables, `--json`, and its exits
//! (77 for a refused or missing token, 69 when nothing listens, 64 for bad
//! input or an API refusal).

use std::path::Path;

use vpcbox::admin_cli::{execute, AdminCommand, AdminOpts, NOPERM};
use vpcbox::config::Config;

use crate::api_server::ApiServer;
use crate::api_support::{subnet_json, TOKEN};

fn config(dir: &Path, listen: &str, token: Option<&str>) -> Config {
    let token_file = dir.join("admin.token");
    if let Some(t) = token {
        std::fs::write(&token_file, format!("{t}\n")).unwrap();
    }
    let text = format!(
        "[storage]\npath = \"{d}/data\"\n\n[dhcp]\nlisten = \"127.0.0.1:0\"\nserver_id = \"10.0.0.1\"\n\n\
         [gateway]\nlisten = \"{listen}\"\nadmin_token_file = \"{t}\"\n",
        d = dir.display(),
        t = token_file.display()
    );
    Config::parse(&text, "<test>").unwrap()
}

fn opts(json: bool) -> AdminOpts {
    AdminOpts {
        json,
        ..AdminOpts::default()
    }
}

async fn seed(server: &ApiServer) {
    let spec = serde_json::from_str(&subnet_json(
        "lab",
        "10.0.0.0/24",
        "10.0.0.100",
        "10.0.0.199",
    ))
    .unwrap();
    server.ctx.ipam.add_subnet(spec).await.unwrap();
    let key = "mac:02:00:00:00:00:01".parse().unwrap();
    server
        .ctx
        .ipam
        .allocate("lab", &key, std::time::SystemTime::now())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_json_and_isolation() {
    let server = ApiServer::start();
    seed(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &server.addr.to_string(), Some(TOKEN));

    let t = execute(&AdminCommand::Subnets { opts: opts(false) }, &cfg)
        .await
        .unwrap();
    assert!(
        t.starts_with("ID") && t.contains("10.0.0.100-10.0.0.199") && t.contains("1%"),
        "{t}"
    );
    let j = execute(&AdminCommand::Subnets { opts: opts(true) }, &cfg)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["subnets"][0]["id"], "lab");

    let leases = |subnet: &str| AdminCommand::Leases {
        subnet: Some(subnet.into()),
        state: None,
        limit: None,
        opts: opts(false),
    };
    let t = execute(&leases("lab"), &cfg).await.unwrap();
    assert!(
        t.contains("10.0.0.100") && t.contains("bound") && t.contains(" in "),
        "{t}"
    );
    let e = execute(&leases("nope"), &cfg).await.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (64, "unknown subnet 'nope' (404)")
    );

    let t = execute(
        &AdminCommand::Clients {
            limit: None,
            opts: opts(false),
        },
        &cfg,
    )
    .await
    .unwrap();
    assert_eq!(t, "no client activity yet\n");

    let iso = |c: &str| AdminCommand::Isolate {
        client: c.into(),
        opts: opts(false),
    };
    let rel = |c: &str| AdminCommand::Release {
        client: c.into(),
        opts: opts(false),
    };
    assert_eq!(
        execute(&iso("02:00:00:00:00:09"), &cfg).await.unwrap(),
        "isolated mac:02:00:00:00:00:09\n"
    );
    assert_eq!(
        execute(&iso("mac:02:00:00:00:00:09"), &cfg).await.unwrap(),
        "mac:02:00:00:00:00:09 was already isolated (by cli)\n"
    );
    assert!(server
        .ctx
        .isolation
        .is_isolated(&"mac:02:00:00:00:00:09".parse().unwrap()));
    assert_eq!(
        execute(&iso("192.0.2.7"), &cfg).await.unwrap(),
        "isolated ip:192.0.2.7\n"
    );
    assert_eq!(
        execute(&rel("ip:192.0.2.7"), &cfg).await.unwrap(),
        "released ip:192.0.2.7\n"
    );
    let e = execute(&rel("ip:192.0.2.7"), &cfg).await.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (64, "'ip:192.0.2.7' is not isolated (404)")
    );
    let e = execute(&iso("bob"), &cfg).await.unwrap_err();
    assert_eq!(e.code, 64, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_problems_exit_77() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let clients = AdminCommand::Clients {
        limit: None,
        opts: opts(false),
    };

    let cfg = config(dir.path(), &server.addr.to_string(), Some("wrong"));
    let e = execute(&clients, &cfg).await.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (NOPERM, "the admin token was refused (401)")
    );

    let missing = tempfile::tempdir().unwrap();
    let cfg = config(missing.path(), &server.addr.to_string(), None);
    let e = execute(&clients, &cfg).await.unwrap_err();
    assert_eq!(e.code, NOPERM);
    assert!(
        e.message.starts_with("admin token file '") && e.message.contains("cannot be read"),
        "{e}"
    );
    // Open reads work without a token.
    assert!(execute(&AdminCommand::Subnets { opts: opts(false) }, &cfg)
        .await
        .is_ok());
    // --token-file wins over the config.
    let tf = dir.path().join("other.token");
    std::fs::write(&tf, TOKEN).unwrap();
    let with_file = AdminCommand::Clients {
        limit: None,
        opts: AdminOpts {
            token_file: Some(tf),
            ..opts(false)
        },
    };
    assert!(execute(&with_file, &cfg).await.is_ok());
}

#[tokio::test]
async fn not_running_exits_69() {
    let port = crate::support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &format!("0.0.0.0:{port}"), Some(TOKEN));
    let e = execute(&AdminCommand::Subnets { opts: opts(false) }, &cfg)
        .await
        .unwrap_err();
    assert_eq!(e.code, 69);
    assert_eq!(
        e.message,
        format!("vpcbox is not running at http://127.0.0.1:{port} (connection refused)")
    );
    let bad = AdminCommand::Subnets {
        opts: AdminOpts {
            api: Some("https://example.invalid".into()),
            ..opts(false)
        },
    };
    assert_eq!(execute(&bad, &cfg).await.unwrap_err().code, 64);
}
