//! The admin API as an operator uses it: reads, the bearer token, registering, weighing and
//! deregistering targets, the OpenAPI document, and reloads by API and by SIGHUP.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::common::{http_client, Backend, Ballast, TestCa};

const TOKEN: &str = "correct-horse-battery-staple";

const ADMIN: &str = r#"
[admin]
bind = "127.0.0.1:0"
token_file = "admin.token"
"#;

/// Checks fast enough that a target registered at run time is healthy in well under a second.
const FAST_CHECK: &str =
    r#"health_check = { interval = "200ms", timeout = "100ms", healthy_threshold = 2, unhealthy_threshold = 2 }"#;

/// How long any state the tests wait for may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// A whole config file: the admin table, then `body`.
fn file(body: &str) -> String {
    format!("{ADMIN}{body}")
}

/// Listener `lb` on a free port with `default_action` and then `rules`.
fn listener(default_action: &str, rules: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "lb"
protocol = "http"
bind = "127.0.0.1:0"
default_action = {default_action}
{rules}
"#
    )
}

fn forward(group: &str) -> String {
    format!(r#"{{ type = "forward", target_group = "{group}" }}"#)
}

fn fixed(body: &str) -> String {
    format!(r#"{{ type = "fixed_response", status = 200, body = "{body}" }}"#)
}

/// Target group `name` with the `extra` keys and these backends as targets.
fn group(name: &str, extra: &str, targets: &[&Backend]) -> String {
    let list: Vec<String> = targets.iter().map(|b| b.target()).collect();
    format!(
        r#"
[[target_groups]]
name = "{name}"
{extra}
targets = [{}]
"#,
        list.join(", ")
    )
}

/// A fresh directory holding the admin token file.
fn token_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).expect("token written");
    dir
}

/// Starts ballast on `file(body)` in `dir`, with its admin API.
fn start_in(dir: tempfile::TempDir, body: &str) -> (Ballast, Api) {
    let ballast = Ballast::start_in(dir, &file(body));
    let api = Api { base: format!("http://{}", ballast.addr("admin")), client: http_client() };
    (ballast, api)
}

fn start(body: &str) -> (Ballast, Api) {
    start_in(token_dir(), body)
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn targets_path(group: &str) -> String {
    format!("/api/v1/target-groups/{group}/targets")
}

fn target_path(group: &str, address: impl std::fmt::Display) -> String {
    format!("/api/v1/target-groups/{group}/targets/{address}")
}

/// The admin API of one ballast.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// One request; the answer's status and its body as JSON (a JSON string when it is not).
    async fn call(&self, method: Method, path: &str, authorization: Option<&str>, body: Option<&str>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("the admin API answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a whole body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None, None).await
    }

    /// A write with the right token.
    async fn write(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        self.call(method, path, Some(&bearer()), body.as_deref()).await
    }

    async fn reload(&self) -> (u16, Value) {
        self.write(Method::POST, "/api/v1/reload", None).await
    }

    /// The targets of `group` as listed.
    async fn targets(&self, group: &str) -> Vec<Value> {
        let (status, body) = self.get(&targets_path(group)).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().expect("a list of targets").clone()
    }

    /// The listed entry of target `address` in `group`.
    async fn target(&self, group: &str, address: impl std::fmt::Display) -> Option<Value> {
        let address = address.to_string();
        self.targets(group).await.into_iter().find(|t| t["address"] == address.as_str())
    }

    /// Waits until target `address` of `group` is listed in `state`; its entry then.
    async fn wait_for_state(&self, group: &str, address: impl std::fmt::Display, state: &str) -> Value {
        let address = address.to_string();
        let end = Instant::now() + DEADLINE;
        loop {
            let entry = self.target(group, &address).await;
            if let Some(entry) = entry.as_ref().filter(|t| t["state"] == state) {
                return entry.clone();
            }
            assert!(Instant::now() < end, "{address} did not become {state} in {DEADLINE:?}; listed as {entry:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until target `address` is no longer listed in `group`.
    async fn wait_gone(&self, group: &str, address: impl std::fmt::Display) {
        let address = address.to_string();
        let end = Instant::now() + DEADLINE;
        while let Some(entry) = self.target(group, &address).await {
            assert!(Instant::now() < end, "{address} is still listed after {DEADLINE:?}: {entry}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `GET url` through a listener: the status and the body.
async fn fetch(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().await.expect("the listener answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a whole body"))
}

/// Polls `GET url` until its body is `want`; panics with the last answer after the deadline.
async fn wait_for_body(url: &str, want: &str) {
    let client = http_client();
    let end = Instant::now() + DEADLINE;
    loop {
        let got = fetch(&client, url).await;
        if got == (200, want.to_string()) {
            return;
        }
        assert!(Instant::now() < end, "{url} still answers {got:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `GET path` on an open HTTP/1.1 connection; the status line and the body.
async fn exchange(tcp: &mut TcpStream, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("request written");
    tokio::time::timeout(DEADLINE, read_response(tcp)).await.expect("an answer in time")
}

async fn read_response(tcp: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(n > 0, "the connection closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("a content-length in {head}"));
    while got.len() < head_end + length {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(n > 0, "the connection closed in the body");
        got.extend_from_slice(&buf[..n]);
    }
    let status_line = head.lines().next().unwrap_or_default().to_string();
    let body = String::from_utf8_lossy(&got[head_end..head_end + length]).into_owned();
    (status_line, body)
}

#[tokio::test]
async fn reads_list_listeners_groups_and_targets_with_their_health() {
    let web = Backend::start("web").await;
    let rules = r#"
  [[listeners.rules]]
  priority = 10
  conditions = { path = ["/api/*"] }
  action = { type = "fixed_response", status = 204 }
"#;
    let (_ballast, api) = start(&format!(
        "{}{}",
        listener(&forward("web"), rules),
        group("web", &format!("algorithm = \"least_outstanding_requests\"\n{FAST_CHECK}"), &[&web])
    ));

    let (status, listeners) = api.get("/api/v1/listeners").await;
    assert_eq!(status, 200, "{listeners}");
    let listeners = listeners.as_array().expect("a list of listeners");
    assert_eq!(listeners.len(), 1, "{listeners:?}");
    let lb = &listeners[0];
    assert_eq!(lb["name"], "lb");
    assert_eq!(lb["protocol"], "http");
    assert_eq!(lb["default_action"]["type"], "forward");
    assert_eq!(lb["default_action"]["target_group"], "web");
    let rules = lb["rules"].as_array().expect("the listener's rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["priority"], 10);
    assert_eq!(rules[0]["conditions"]["path"], json!(["/api/*"]));
    assert_eq!(rules[0]["action"]["type"], "fixed_response");
    assert_eq!(rules[0]["action"]["status"], 204);

    let (status, groups) = api.get("/api/v1/target-groups").await;
    assert_eq!(status, 200, "{groups}");
    let groups = groups.as_array().expect("a list of target groups");
    assert_eq!(groups.len(), 1, "{groups:?}");
    let g = &groups[0];
    assert_eq!(g["name"], "web");
    assert_eq!(g["algorithm"], "least_outstanding_requests");
    assert_eq!(g["protocol"], "http");
    assert_eq!(g["deregistration_delay"], "5m", "ELB's default, 300 s");
    assert_eq!(g["health_check"]["interval"], "200ms");
    assert_eq!(g["health_check"]["healthy_threshold"], 2);

    let entry = api.wait_for_state("web", web.addr, "healthy").await;
    assert_eq!(
        entry,
        json!({
            "address": web.addr.to_string(),
            "weight": 1,
            "zone": null,
            "state": "healthy",
            "reason": null,
        })
    );
    let (_, groups) = api.get("/api/v1/target-groups").await;
    assert_eq!(groups[0]["healthy_targets"], 1, "{groups}");

    let (status, body) = api.get(&targets_path("nowhere")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("nowhere")), "a JSON error naming the group: {body}");
}

#[tokio::test]
async fn writes_need_the_bearer_token() {
    let web = Backend::start("web").await;
    let spare = Backend::start("spare").await;
    let (_ballast, api) = start(&format!("{}{}", listener(&forward("web"), ""), group("web", FAST_CHECK, &[&web])));
    let register = json!({ "address": spare.addr.to_string() }).to_string();
    let weight = json!({ "weight": 5 }).to_string();
    let register_path = targets_path("web");
    let web_path = target_path("web", web.addr);
    let writes: [(Method, &str, Option<&str>); 4] = [
        (Method::POST, &register_path, Some(&register)),
        (Method::PATCH, &web_path, Some(&weight)),
        (Method::DELETE, &web_path, None),
        (Method::POST, "/api/v1/reload", None),
    ];
    let wrong = [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
    ];
    for (method, path, body) in &writes {
        for authorization in &wrong {
            let (status, answer) = api.call(method.clone(), path, authorization.as_deref(), *body).await;
            assert_eq!(status, 401, "{method} {path} with {authorization:?}: {answer}");
            assert!(answer["error"].is_string(), "a JSON error: {answer}");
        }
    }
    // Nothing of the refused writes happened.
    let listed = api.targets("web").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["weight"], 1);

    // Reads stay open on loopback.
    assert_eq!(api.get("/api/v1/listeners").await.0, 200);

    let expected = [201, 200, 202, 200];
    for ((method, path, body), want) in writes.iter().zip(expected) {
        let (status, answer) = api.call(method.clone(), path, Some(&bearer()), *body).await;
        assert_eq!(status, want, "{method} {path} with the token: {answer}");
    }
}

#[tokio::test]
async fn a_registered_target_checks_in_then_takes_traffic() {
    let first = Backend::start("first").await;
    let second = Backend::start("second").await;
    let (ballast, api) = start(&format!("{}{}", listener(&forward("web"), ""), group("web", FAST_CHECK, &[&first])));
    api.wait_for_state("web", first.addr, "healthy").await;

    let (status, body) = api
        .write(
            Method::POST,
            &targets_path("web"),
            Some(json!({ "address": second.addr.to_string(), "weight": 2, "zone": "b" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let entry = api.target("web", second.addr).await.expect("the new target is listed");
    assert_eq!(
        entry,
        json!({
            "address": second.addr.to_string(),
            "weight": 2,
            "zone": "b",
            "state": "initial",
            "reason": "Elb.InitialHealthChecking",
        })
    );
    // A target registered at run time serves only after `healthy_threshold` checks.
    assert_eq!(second.seen().len(), 0);
    let entry = api.wait_for_state("web", second.addr, "healthy").await;
    assert_eq!(entry["reason"], Value::Null);
    assert!(second.checks() >= 2, "healthy after {} checks", second.checks());

    let client = http_client();
    for _ in 0..10 {
        assert_eq!(fetch(&client, &ballast.url("lb")).await.0, 200);
    }
    assert_eq!((first.seen().len(), second.seen().len()), (5, 5), "round robin over both targets");
}

#[tokio::test]
async fn registering_refuses_duplicates_unknown_groups_and_bad_bodies() {
    let web = Backend::start("web").await;
    let (_ballast, api) = start(&format!("{}{}", listener(&forward("web"), ""), group("web", FAST_CHECK, &[&web])));
    let path = targets_path("web");
    let new = json!({ "address": "127.0.0.1:9" });
    assert_eq!(api.write(Method::POST, &path, Some(new.clone())).await.0, 201);
    let (status, body) = api.write(Method::POST, &path, Some(new.clone())).await;
    assert_eq!(status, 409, "registered twice: {body}");
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = api.write(Method::POST, &path, Some(json!({ "address": web.addr.to_string() }))).await;
    assert_eq!(status, 409, "a file target registered again: {body}");

    let (status, body) = api.write(Method::POST, &targets_path("nowhere"), Some(new.clone())).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string(), "{body}");

    let bad_bodies = [
        json!({ "adress": "127.0.0.1:10" }).to_string(),
        "address=127.0.0.1:10".to_string(),
        "{\"address\": ".to_string(),
        json!({ "address": "nonsense" }).to_string(),
        json!({ "address": "127.0.0.1:10", "weight": "heavy" }).to_string(),
        json!({ "address": "127.0.0.1:10", "weight": 1000 }).to_string(),
    ];
    for bad in &bad_bodies {
        let (status, body) = api.call(Method::POST, &path, Some(&bearer()), Some(bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: a JSON error, got {body}");
    }
    let listed: HashSet<String> =
        api.targets("web").await.iter().map(|t| t["address"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(
        listed,
        HashSet::from([web.addr.to_string(), "127.0.0.1:9".to_string()]),
        "only the good registration took"
    );
}

#[tokio::test]
async fn a_new_weight_is_listed_and_shares_traffic_by_ratio() {
    let light = Backend::start("light").await;
    let heavy = Backend::start("heavy").await;
    let (ballast, api) = start(&format!(
        "{}{}",
        listener(&forward("web"), ""),
        group("web", &format!("algorithm = \"weighted_round_robin\"\n{FAST_CHECK}"), &[&light, &heavy])
    ));
    api.wait_for_state("web", light.addr, "healthy").await;
    api.wait_for_state("web", heavy.addr, "healthy").await;

    let (status, body) = api.write(Method::PATCH, &target_path("web", heavy.addr), Some(json!({ "weight": 3 }))).await;
    assert_eq!(status, 200, "{body}");
    let entry = api.target("web", heavy.addr).await.expect("still listed");
    assert_eq!(entry["weight"], 3);
    assert_eq!(entry["state"], "healthy", "a new weight keeps the health");
    assert_eq!(api.target("web", light.addr).await.unwrap()["weight"], 1);

    let client = http_client();
    for _ in 0..40 {
        assert_eq!(fetch(&client, &ballast.url("lb")).await.0, 200);
    }
    assert_eq!(
        (light.seen().len(), heavy.seen().len()),
        (10, 30),
        "smooth weighted round robin is exact over whole cycles of 1 + 3"
    );

    for (path, body, want) in [
        (target_path("web", heavy.addr), json!({ "weight": 1000 }), 400),
        (target_path("web", heavy.addr), json!({ "wieght": 2 }), 400),
        (target_path("web", "127.0.0.1:9"), json!({ "weight": 2 }), 404),
        (target_path("nowhere", heavy.addr), json!({ "weight": 2 }), 404),
    ] {
        let (status, answer) = api.write(Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(status, want, "PATCH {path} {body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
}

#[tokio::test]
async fn a_deregistered_target_drains_then_leaves() {
    let stays = Backend::start("stays").await;
    let leaves = Backend::start("leaves").await;
    let (ballast, api) = start(&format!(
        "{}{}",
        listener(&forward("web"), ""),
        group("web", &format!("deregistration_delay = \"5s\"\n{FAST_CHECK}"), &[&stays, &leaves])
    ));
    api.wait_for_state("web", stays.addr, "healthy").await;
    api.wait_for_state("web", leaves.addr, "healthy").await;

    // One slow request on each target: the one on `leaves` keeps it draining a while.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("{}/sleep/1500", ballast.url("lb"));
            tokio::spawn(async move { fetch(&http_client(), &url).await })
        })
        .collect();
    let end = Instant::now() + DEADLINE;
    while leaves.in_flight() == 0 {
        assert!(Instant::now() < end, "no slow request reached `leaves`");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let deregistered = Instant::now();
    let (status, body) = api.write(Method::DELETE, &target_path("web", leaves.addr), None).await;
    assert_eq!(status, 202, "{body}");
    let entry = api.target("web", leaves.addr).await.expect("listed while it drains");
    assert_eq!(entry["state"], "draining", "{entry}");
    assert_eq!(entry["reason"], "Target.DeregistrationInProgress", "{entry}");

    let before = leaves.seen().len();
    let client = http_client();
    for _ in 0..10 {
        assert_eq!(fetch(&client, &ballast.url("lb")).await, (200, "stays".to_string()));
    }
    assert_eq!(leaves.seen().len(), before, "a draining target gets nothing new");

    // The request in flight finishes, and the drain ends with it, before the 5 s delay.
    for task in slow {
        let (status, _) = task.await.expect("the slow request task");
        assert_eq!(status, 200, "requests in flight finish");
    }
    api.wait_gone("web", leaves.addr).await;
    assert!(
        deregistered.elapsed() < Duration::from_millis(4500),
        "the drain ends when nothing is in flight, not after the whole delay: {:?}",
        deregistered.elapsed()
    );
    for _ in 0..4 {
        assert_eq!(fetch(&client, &ballast.url("lb")).await, (200, "stays".to_string()));
    }
    assert_eq!(leaves.seen().len(), before);

    for (group, address) in [("web", leaves.addr.to_string()), ("nowhere", stays.addr.to_string())] {
        let (status, body) = api.write(Method::DELETE, &target_path(group, &address), None).await;
        assert_eq!(status, 404, "DELETE {group}/{address}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn a_target_deregistered_with_no_delay_leaves_at_once() {
    let stays = Backend::start("stays").await;
    let leaves = Backend::start("leaves").await;
    let (_ballast, api) = start(&format!(
        "{}{}",
        listener(&forward("web"), ""),
        group("web", &format!("deregistration_delay = \"0s\"\n{FAST_CHECK}"), &[&stays, &leaves])
    ));
    let (status, body) = api.write(Method::DELETE, &target_path("web", leaves.addr), None).await;
    assert_eq!(status, 202, "{body}");
    api.wait_gone("web", leaves.addr).await;
    assert!(api.target("web", stays.addr).await.is_some());
    // Gone for good: it may be registered again, and starts its life anew.
    let (status, body) =
        api.write(Method::POST, &targets_path("web"), Some(json!({ "address": leaves.addr.to_string() }))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(api.target("web", leaves.addr).await.unwrap()["state"], "initial");
}

/// A body for `schema` (a `$ref` into the document's components): its required properties.
fn example_body(document: &Value, schema: &Value) -> Value {
    let schema = match schema["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            document.pointer(pointer).cloned().unwrap_or_default()
        }
        None => schema.clone(),
    };
    let mut body = serde_json::Map::new();
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().expect("a property name");
        let value = match schema["properties"][name]["type"].as_str() {
            Some("integer") => json!(1),
            Some("string") if name == "address" => json!("127.0.0.1:9"),
            _ => json!("x"),
        };
        body.insert(name.to_string(), value);
    }
    Value::Object(body)
}

#[tokio::test]
async fn every_documented_route_exists_and_every_designed_route_is_documented() {
    let web = Backend::start("web").await;
    let (_ballast, api) = start(&format!("{}{}", listener(&forward("web"), ""), group("web", FAST_CHECK, &[&web])));
    let (status, document) = api.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200, "{document}");
    assert!(
        document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "an OpenAPI 3 document: {}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");

    // The router's own answer to a route it does not have, which no documented route may give.
    let (status, body) = api.get("/api/v1/no-such-thing").await;
    assert_eq!((status, &body["error"]), (404, &json!("no such route")));

    // The routes DESIGN.md names.
    let designed = [
        ("get", "/api/v1/listeners"),
        ("get", "/api/v1/target-groups"),
        ("get", "/api/v1/target-groups/{name}/targets"),
        ("post", "/api/v1/target-groups/{name}/targets"),
        ("delete", "/api/v1/target-groups/{name}/targets/{address}"),
        ("patch", "/api/v1/target-groups/{name}/targets/{address}"),
        ("get", "/api/v1/scaling-groups"),
        ("put", "/api/v1/scaling-groups/{name}"),
        ("post", "/api/v1/reload"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/metrics"),
        ("get", "/"),
    ];
    for (method, path) in designed {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{} {path} is not in the document",
            method.to_uppercase()
        );
    }

    // Every documented operation, in an order that changes a target before removing it.
    let mut tried = 0;
    for (path, item) in paths {
        for method in ["get", "put", "post", "patch", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let url_path = path.replace("{name}", "web").replace("{address}", &web.addr.to_string());
            let body = operation
                .pointer("/requestBody/content/application~1json/schema")
                .map(|schema| example_body(&document, schema).to_string());
            let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, answer) = api.call(http_method, &url_path, Some(&bearer()), body.as_deref()).await;
            let what = format!("{} {url_path} {body:?} -> {status} {answer}", method.to_uppercase());
            assert_ne!(status, 405, "{what}");
            assert!(!(status == 404 && answer["error"] == "no such route"), "documented but not routed: {what}");
            assert_ne!(status, 401, "the token is sent: {what}");
            let documented = operation["responses"].as_object().is_some_and(|r| r.contains_key(&status.to_string()));
            assert!(documented, "an answer the document does not list: {what}");
            tried += 1;
        }
    }
    assert!(tried >= 12, "only {tried} operations are documented");
}

/// A file body whose listener forwards to `web`; given `rule`, a rule answers it on `/rule`.
fn reloadable(web: &Backend, rule: Option<&str>) -> String {
    let rules = rule.map_or(String::new(), |body| {
        format!(
            r#"
  [[listeners.rules]]
  priority = 5
  conditions = {{ path = ["/rule"] }}
  action = {}
"#,
            fixed(body)
        )
    });
    format!("{}{}", listener(&forward("web"), &rules), group("web", FAST_CHECK, &[web]))
}

#[tokio::test]
async fn reload_through_the_api_applies_the_file_and_keeps_open_connections() {
    let web = Backend::start("web").await;
    let (ballast, api) = start(&reloadable(&web, None));
    api.wait_for_state("web", web.addr, "healthy").await;
    let mut open = TcpStream::connect(ballast.addr("lb")).await.unwrap();
    let (status, body) = exchange(&mut open, "/").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "web");
    let rule_url = format!("{}/rule", ballast.url("lb"));
    assert_eq!(fetch(&http_client(), &rule_url).await, (200, "web".to_string()));

    ballast.rewrite_config(&file(&format!(
        "{}{}",
        listener(&fixed("everything"), ""),
        group("web", FAST_CHECK, &[&web])
    )));
    let (status, body) = api.reload().await;
    assert_eq!(status, 200, "{body}");
    wait_for_body(&ballast.url("lb"), "everything").await;

    // The connection opened before the reload is still served, by the new file.
    let (status, body) = exchange(&mut open, "/").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "everything");

    // A rule added by a reload applies too.
    ballast.rewrite_config(&file(&reloadable(&web, Some("ruled"))));
    assert_eq!(api.reload().await.0, 200);
    wait_for_body(&rule_url, "ruled").await;
    wait_for_body(&ballast.url("lb"), "web").await;
    let (status, body) = exchange(&mut open, "/rule").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "ruled");
    let (_, listeners) = api.get("/api/v1/listeners").await;
    assert_eq!(listeners[0]["rules"][0]["priority"], 5, "{listeners}");
}

#[tokio::test]
async fn sighup_reloads_the_file() {
    let web = Backend::start("web").await;
    let (ballast, api) = start(&reloadable(&web, None));
    api.wait_for_state("web", web.addr, "healthy").await;
    let mut open = TcpStream::connect(ballast.addr("lb")).await.unwrap();
    assert_eq!(exchange(&mut open, "/rule").await.1, "web");

    ballast.rewrite_config(&file(&reloadable(&web, Some("hung up"))));
    ballast.hangup();
    wait_for_body(&format!("{}/rule", ballast.url("lb")), "hung up").await;
    let (status, body) = exchange(&mut open, "/rule").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "hung up");
    assert_eq!(exchange(&mut open, "/").await.1, "web");
    assert_eq!(api.target("web", web.addr).await.unwrap()["state"], "healthy");
}

#[tokio::test]
async fn an_invalid_file_is_refused_with_line_key_and_message() {
    let web = Backend::start("web").await;
    let (ballast, api) = start(&reloadable(&web, Some("before")));
    api.wait_for_state("web", web.addr, "healthy").await;
    let rule_url = format!("{}/rule", ballast.url("lb"));
    assert_eq!(fetch(&http_client(), &rule_url).await, (200, "before".to_string()));
    let (_, listeners_before) = api.get("/api/v1/listeners").await;

    let invalid = file(&format!(
        "{}{}",
        listener(&forward("nowhere"), ""),
        group("web", r#"health_check = { interval = "1s", timeout = "5s" }"#, &[&web])
    ));
    ballast.rewrite_config(&invalid);
    let (status, body) = api.reload().await;
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].as_array().expect("a list of errors");
    assert!(errors.len() >= 2, "both problems are reported: {body}");
    let lines: Vec<&str> = invalid.lines().collect();
    for e in errors {
        let line = e["line"].as_u64().unwrap_or_else(|| panic!("a line: {e}"));
        let key = e["key"].as_str().unwrap_or_else(|| panic!("a key: {e}"));
        let message = e["message"].as_str().unwrap_or_else(|| panic!("a message: {e}"));
        assert!(!key.is_empty() && !message.is_empty(), "{e}");
        // The line named is the one that holds the key.
        let last = key.rsplit('.').next().unwrap_or(key);
        let last = last.split('[').next().unwrap_or(last);
        let text = lines.get(line as usize - 1).copied().unwrap_or_default();
        assert!(text.contains(last), "line {line} is `{text}`, not `{key}`");
    }
    assert!(errors.iter().any(|e| e["key"] == "listeners[0].default_action.target_group"), "{body}");

    // The running config is untouched.
    let client = http_client();
    assert_eq!(fetch(&client, &rule_url).await, (200, "before".to_string()));
    assert_eq!(fetch(&client, &ballast.url("lb")).await, (200, "web".to_string()));
    assert_eq!(api.get("/api/v1/listeners").await.1, listeners_before);

    // Refused through SIGHUP too: the process keeps serving the old file.
    ballast.hangup();
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        assert_eq!(fetch(&client, &rule_url).await, (200, "before".to_string()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(api.get("/api/v1/listeners").await.1, listeners_before);

    // A file that does not parse at all is refused the same way.
    ballast.rewrite_config(&format!("{}\n[[listeners]\nname = ", file("")));
    let (status, body) = api.reload().await;
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].as_array().expect("a list of errors");
    assert!(!errors.is_empty() && errors.iter().all(|e| e["line"].is_u64()), "{body}");
    assert_eq!(fetch(&client, &rule_url).await, (200, "before".to_string()));
}

#[tokio::test]
async fn target_health_survives_a_reload() {
    let web = Backend::start("web").await;
    // Slow checks that need 5 passes: a target that restarted its life cycle would be
    // `initial` for 5 seconds at least.
    let slow_check = r#"health_check = { interval = "1s", timeout = "500ms", healthy_threshold = 5 }"#;
    let body = |rule: &str| {
        format!(
            "{}{}",
            listener(
                &forward("web"),
                &format!(
                    "  [[listeners.rules]]\n  priority = 1\n  conditions = {{ path = [\"/r\"] }}\n  action = {}\n",
                    fixed(rule)
                )
            ),
            group("web", slow_check, &[&web])
        )
    };
    let (ballast, api) = start(&body("one"));
    api.wait_for_state("web", web.addr, "healthy").await;

    ballast.rewrite_config(&file(&body("two")));
    assert_eq!(api.reload().await.0, 200);
    let entry = api.target("web", web.addr).await.expect("still listed");
    assert_eq!(entry["state"], "healthy", "right after the reload: {entry}");
    assert_eq!(entry["reason"], Value::Null);
    wait_for_body(&format!("{}/r", ballast.url("lb")), "two").await;

    ballast.rewrite_config(&file(&body("three")));
    ballast.hangup();
    wait_for_body(&format!("{}/r", ballast.url("lb")), "three").await;
    let entry = api.target("web", web.addr).await.expect("still listed");
    assert_eq!(entry["state"], "healthy", "right after SIGHUP: {entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_request() {
    const REQUESTS: usize = 5_000;
    const MIN_RELOADS: usize = 6;
    const MAX_REQUESTS: usize = 200_000;
    const CLIENTS: usize = 16;
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    // Both files hold both groups, so every target keeps its health across each reload.
    let to_web = format!(
        "{}{}{}",
        listener(&forward("web"), ""),
        group("web", FAST_CHECK, &[&a, &b]),
        group("alt", FAST_CHECK, &[&c])
    );
    let to_alt = format!(
        "{}{}{}",
        listener(&forward("alt"), ""),
        group("web", &format!("algorithm = \"weighted_round_robin\"\n{FAST_CHECK}"), &[&a, &b]),
        group("alt", FAST_CHECK, &[&c])
    );
    let (ballast, api) = start(&to_web);
    for backend in [&a, &b] {
        api.wait_for_state("web", backend.addr, "healthy").await;
    }
    api.wait_for_state("alt", c.addr, "healthy").await;

    let url = ballast.url("lb");
    // Requests go on until REQUESTS have been sent and MIN_RELOADS reloads have happened
    // under them, however fast the machine. Each carries its number, so that a request
    // served twice or never can be named.
    let next = Arc::new(AtomicUsize::new(0));
    let reloaded = Arc::new(AtomicUsize::new(0));
    let sent_numbers = Arc::new(Mutex::new(Vec::<usize>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let load = async {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (url, next, reloaded, sent_numbers, failures) = (
                    url.clone(),
                    Arc::clone(&next),
                    Arc::clone(&reloaded),
                    Arc::clone(&sent_numbers),
                    Arc::clone(&failures),
                );
                tokio::spawn(async move {
                    let client = http_client();
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= MAX_REQUESTS || (n >= REQUESTS && reloaded.load(Ordering::SeqCst) >= MIN_RELOADS) {
                            break;
                        }
                        sent_numbers.lock().unwrap().push(n);
                        let sent = client.get(&url).header("x-request-number", n.to_string()).send().await;
                        let outcome = match sent {
                            Ok(response) if response.status() == 200 => match response.text().await {
                                Ok(_) => continue,
                                Err(e) => format!("body: {e}"),
                            },
                            Ok(response) => {
                                format!("{} {}", response.status(), response.text().await.unwrap_or_default())
                            }
                            Err(e) => format!("{e}"),
                        };
                        failures.lock().unwrap().push(format!("request {n}: {outcome}"));
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("a client task");
        }
        done.store(true, Ordering::SeqCst);
    };
    let reloads = async {
        while !done.load(Ordering::SeqCst) {
            let count = reloaded.load(Ordering::SeqCst);
            let next_file = if count.is_multiple_of(2) { &to_alt } else { &to_web };
            ballast.rewrite_config(&file(next_file));
            let (status, body) = api.reload().await;
            assert_eq!(status, 200, "reload {count}: {body}");
            reloaded.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(180), async { tokio::join!(load, reloads) })
        .await
        .expect("the requests in three minutes");
    let count = reloaded.load(Ordering::SeqCst);
    let sent_numbers = sent_numbers.lock().unwrap().clone();
    let sent = sent_numbers.len();

    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed across {count} reloads, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let mut times_served: std::collections::HashMap<usize, usize> = sent_numbers.iter().map(|&n| (n, 0)).collect();
    let mut unsent = Vec::new();
    for seen in a.seen().iter().chain(&b.seen()).chain(&c.seen()) {
        let n: usize = seen.header("x-request-number").and_then(|n| n.parse().ok()).expect("a numbered request");
        match times_served.get_mut(&n) {
            Some(times) => *times += 1,
            None => unsent.push(n),
        }
    }
    let twice: Vec<_> = times_served.iter().filter(|(_, &t)| t > 1).map(|(n, _)| n).collect();
    let never: Vec<_> = times_served.iter().filter(|(_, &t)| t == 0).map(|(n, _)| n).collect();
    assert!(
        twice.is_empty() && never.is_empty() && unsent.is_empty(),
        "across {count} reloads, of {sent} requests these were served more than once: {twice:?}, never: \
         {never:?}; served but never sent: {unsent:?}"
    );
    assert!(count >= MIN_RELOADS, "only {count} reloads happened under load");
    assert!(
        !c.seen().is_empty() && !a.seen().is_empty() && !b.seen().is_empty(),
        "the reloads took effect: a {}, b {}, c {}",
        a.seen().len(),
        b.seen().len(),
        c.seen().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_right_after_startup_reloads_rather_than_kills() {
    const ATTEMPTS: usize = 48;
    const AT_ONCE: usize = 8;
    let before = listener(&fixed("before"), "");
    let after = file(&listener(&fixed("after"), ""));
    let mut killed = 0;
    for _ in 0..ATTEMPTS / AT_ONCE {
        let started: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let (before, after) = (before.clone(), after.clone());
                // An operator's `systemctl reload` the moment ballast says it listens.
                tokio::task::spawn_blocking(move || {
                    let (ballast, _api) = start(&before);
                    ballast.rewrite_config(&after);
                    ballast.hangup();
                    ballast
                })
            })
            .collect();
        for ballast in started {
            let ballast = ballast.await.expect("ballast starts");
            let client = http_client();
            let end = Instant::now() + DEADLINE;
            loop {
                let answer = match client.get(ballast.url("lb")).send().await {
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(_) => {
                        killed += 1;
                        break;
                    }
                };
                if answer == "after" {
                    break;
                }
                assert!(Instant::now() < end, "the SIGHUP was never applied");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // Regression guard: `server::start` once announced its listeners and admin API before it
    // installed the SIGHUP handler, and an early SIGHUP met the default action and killed it.
    assert_eq!(killed, 0, "{killed} of {ATTEMPTS} ballasts died of a SIGHUP sent right after startup");
}

/// The certificate the listener presents to a new handshake naming `sni`.
async fn presented_certificate(ca: &TestCa, addr: std::net::SocketAddr, sni: &str) -> Vec<u8> {
    let mut config = ca.client_config(&[]);
    // Inspect whichever certificate comes back, even one for another name.
    config.dangerous().set_certificate_verifier(Arc::new(crate::common::certs::AcceptAny));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        DEADLINE,
        TlsConnector::from(Arc::new(config)).connect(ServerName::try_from(sni.to_string()).unwrap(), tcp),
    )
    .await
    .expect("a handshake in time")
    .expect("a handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn write_site(ca: &TestCa, dir: &Path, names: &[&str]) -> Vec<u8> {
    ca.write_leaf(dir, "site", names).der
}

#[tokio::test]
async fn a_reload_picks_up_renewed_certificates() {
    let ca = TestCa::new();
    let dir = token_dir();
    let old = write_site(&ca, dir.path(), &["a.test"]);
    let web = Backend::start("web").await;
    let body = format!(
        r#"
[[certificates]]
name = "site"
cert = "site.pem"
key = "site.key"

[[listeners]]
name = "tls"
protocol = "https"
bind = "127.0.0.1:0"
certificates = ["site"]
default_action = {}
{}"#,
        forward("web"),
        group("web", FAST_CHECK, &[&web])
    );
    let site_dir = dir.path().to_path_buf();
    let (ballast, api) = start_in(dir, &body);
    let addr = ballast.addr("tls");
    assert_eq!(presented_certificate(&ca, addr, "a.test").await, old);

    let new = write_site(&ca, &site_dir, &["b.test"]);
    assert_ne!(new, old);
    // Files alone change nothing until a reload.
    assert_eq!(presented_certificate(&ca, addr, "a.test").await, old);
    let (status, answer) = api.reload().await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(presented_certificate(&ca, addr, "b.test").await, new);
    assert_eq!(presented_certificate(&ca, addr, "a.test").await, new, "the only certificate is the default");

    // A key that does not fit the certificate is refused, and the renewed one stays.
    let stray = ca.leaf(&["c.test"]);
    std::fs::write(site_dir.join("site.key"), &stray.key_pem).unwrap();
    let (status, answer) = api.reload().await;
    assert_eq!(status, 422, "{answer}");
    let errors = answer["errors"].as_array().expect("a list of errors");
    assert!(
        errors.iter().any(|e| e["key"] == "certificates[0].cert" && e["line"].is_u64() && e["message"].is_string()),
        "{answer}"
    );
    assert_eq!(presented_certificate(&ca, addr, "b.test").await, new);

    // And requests still pass over the renewed certificate.
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(ca.client_config(&[b"h2", b"http/1.1"]))
        .resolve("b.test", addr)
        .build()
        .unwrap();
    let response = client.get(format!("https://b.test:{}/", addr.port())).send().await.expect("an https answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "web");
}
