//! The command line: --version, check (with file, line and key), the demo.

use std::time::Duration;

use crate::common::process::{run, write_file};
use crate::common::{http_client, TestCa};

#[test]
fn version_prints_name_and_version() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("ballast {}", env!("CARGO_PKG_VERSION")));
}

/// The example of DESIGN.md, with the groups it refers to and a real certificate.
fn design_example(dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir.join("certs")).expect("certs dir");
    TestCa::new().write_leaf(&dir.join("certs"), "site", &["site.test"]);
    std::fs::write(dir.join("admin.token"), "secret\n").expect("token");
    let group = |name: &str| {
        format!("[[target_groups]]\nname = \"{name}\"\ntargets = [ {{ address = \"127.0.0.1:9001\" }} ]\n")
    };
    format!(
        r#"
[admin]
bind = "127.0.0.1:9900"
token_file = "admin.token"

[[certificates]]
name = "site"
cert = "certs/site.pem"
key  = "certs/site.key"

[[listeners]]
name = "http"
protocol = "http"
bind = "0.0.0.0:80"
zone = "a"
default_action = {{ type = "redirect", protocol = "https", port = "443", status = 301 }}

[[listeners]]
name = "https"
protocol = "https"
bind = "0.0.0.0:443"
certificates = ["site"]
default_action = {{ type = "forward", target_group = "web" }}
desync_mitigation = "defensive"
proxy_protocol = false
allow = []
deny = ["203.0.113.0/24"]

  [listeners.limits]
  header_timeout = "10s"
  idle_timeout = "60s"
  max_header_bytes = 65536
  max_body_bytes = 1073741824
  max_connections_per_ip = 1000

  [listeners.rate_limit]
  per_ip = 100
  burst = 200

  [[listeners.rules]]
  priority = 10
  conditions = {{ path = ["/user*"] }}
  action = {{ type = "forward", target_group = "users" }}

  [[listeners.rules]]
  priority = 20
  conditions = {{ query = {{ Platform = "Mobile" }} }}
  action = {{ type = "forward", target_groups = [{{ name = "mobile", weight = 9 }}, {{ name = "canary", weight = 1 }}] }}

[runtime]
worker_threads = 0

[[target_groups]]
name = "web"
protocol = "http"
protocol_version = "http1"
proxy_protocol = "off"
target_timeout = "60s"
algorithm = "round_robin"
deregistration_delay = "300s"
slow_start = "0s"
cross_zone = true
stickiness = {{ type = "lb_cookie", duration = "1d" }}
health_check = {{ protocol = "http", path = "/", port = "traffic-port", interval = "30s",
                 timeout = "5s", healthy_threshold = 5, unhealthy_threshold = 2, matcher = "200" }}
targets = [ {{ address = "127.0.0.1:8080", weight = 1, zone = "a" }},
            {{ address = "127.0.0.1:8081", weight = 2, zone = "b" }} ]

{}
{}
{}
"#,
        group("users"),
        group("mobile"),
        group("canary")
    )
}

#[test]
fn check_accepts_every_key_of_the_design_example() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "ballast.toml", &design_example(dir.path()));
    let out = run(&["check", "-c", path.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_names_file_line_and_key_of_every_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = r#"[[listeners]]
name = "web"
protocol = "https"
bind = "127.0.0.1:0"
certificates = ["missing-cert"]
default_action = { type = "forward", target_group = "nowhere" }

  [[listeners.rules]]
  priority = 5
  conditions = { source_ip = ["10.0.0.0/40"] }
  action = { type = "redirect", status = 200 }

[[target_groups]]
name = "web"
targets = [ { address = "127.0.0.1" } ]
"#;
    let path = write_file(dir.path(), "bad.toml", text);
    let file = path.to_str().expect("utf-8 path");
    let out = run(&["check", "-c", file]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        format!("{file}:5: listeners[0].certificates[0]: no certificate is named `missing-cert`"),
        format!("{file}:6: listeners[0].default_action.target_group: no target group is named `nowhere`"),
        format!("{file}:10: listeners[0].rules[0].conditions.source_ip[0]:"),
        format!("{file}:11: listeners[0].rules[0].action.status: 200 is not a redirect status"),
        format!("{file}:15: target_groups[0].targets[0].address: `127.0.0.1` has no port"),
    ] {
        assert!(err.contains(&expected), "missing `{expected}` in:\n{err}");
    }
}

#[test]
fn unknown_keys_and_bad_durations_are_errors_with_their_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unknown = write_file(
        dir.path(),
        "unknown.toml",
        "[[target_groups]]\nname = \"web\"\ntargets = []\nalgoritm = \"round_robin\"\n",
    );
    let out = run(&["check", "-c", unknown.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown.toml:4: target_groups.algoritm: unknown field `algoritm`"), "{err}");

    let duration =
        write_file(dir.path(), "duration.toml", "[[target_groups]]\nname = \"web\"\n\ntarget_timeout = \"60\"\n");
    let out = run(&["check", "-c", duration.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("duration.toml:4: target_groups.target_timeout: `60` has no unit"), "{err}");

    let out = run(&["check", "-c", "/nonexistent/ballast.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the file"));
}

#[tokio::test]
async fn the_demo_rotates_over_three_named_backends() {
    let mut child = std::process::Command::new(crate::common::process::binary())
        .stdout(std::process::Stdio::piped())
        .env("BALLAST_LOG", "warn")
        .spawn()
        .expect("demo starts");
    let stdout = child.stdout.take().expect("piped");
    let announced = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.starts_with("ballast demo:"))
    });
    let line = tokio::time::timeout(Duration::from_secs(20), announced).await;
    let client = http_client();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let body = client.get("http://127.0.0.1:8080/").send().await.expect("demo answers").text().await;
        bodies.push(body.expect("a body"));
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("announced in time").expect("thread ok").expect("a line");
    assert!(line.contains("http://127.0.0.1:8080/"), "{line}");
    let names: Vec<&str> = bodies.iter().map(|b| &b[..b.find(" (").unwrap_or(b.len())]).collect();
    assert_eq!(names[0..3].iter().collect::<std::collections::HashSet<_>>().len(), 3, "{bodies:?}");
    assert_eq!(names[3], names[0], "{bodies:?}");
    assert!(names.iter().all(|n| n.starts_with("hello from demo backend")), "{bodies:?}");
}
