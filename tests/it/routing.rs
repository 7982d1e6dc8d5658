//! Rules over real sockets: each condition, priorities, redirects, fixed responses, and
//! forwards to weighted target groups.

use crate::common::{http_client, Backend, Ballast};

struct Fleet {
    ballast: Ballast,
    api: Backend,
    admin: Backend,
    web: Backend,
    mobile: Backend,
    canary: Backend,
}

async fn fleet() -> Fleet {
    let api = Backend::start("api").await;
    let admin = Backend::start("admin").await;
    let web = Backend::start("web").await;
    let mobile = Backend::start("mobile").await;
    let canary = Backend::start("canary").await;
    let group = |name: &str, b: &Backend| format!("[[target_groups]]\nname = \"{name}\"\ntargets = [{}]\n", b.target());
    let config = format!(
        r#"
[[listeners]]
name = "main"
protocol = "http"
bind = "127.0.0.1:0"
default_action = {{ type = "forward", target_group = "web" }}

  [[listeners.rules]]
  priority = 10
  conditions = {{ path = ["/api/*", "/v?/api"] }}
  action = {{ type = "forward", target_group = "api" }}

  [[listeners.rules]]
  priority = 20
  conditions = {{ host = ["admin.*"], method = ["POST", "DELETE"] }}
  action = {{ type = "forward", target_group = "admin" }}

  [[listeners.rules]]
  priority = 30
  conditions = {{ query = {{ platform = ["mobile", "tablet"] }} }}
  action = {{ type = "forward", target_groups = [{{ name = "mobile", weight = 3 }}, {{ name = "canary", weight = 1 }}] }}

  [[listeners.rules]]
  priority = 40
  conditions = {{ header = {{ "X-Beta" = "on*" }} }}
  action = {{ type = "forward", target_group = "canary" }}

  [[listeners.rules]]
  priority = 50
  conditions = {{ source_ip = ["10.0.0.0/8", "::1/128"] }}
  action = {{ type = "fixed_response", status = 403, body = "not from there" }}

  [[listeners.rules]]
  priority = 60
  conditions = {{ path = ["/old/*"] }}
  action = {{ type = "redirect", protocol = "https", port = "443", path = "/new/#{{path}}", status = 308 }}

  [[listeners.rules]]
  priority = 70
  conditions = {{ path = ["/maintenance"] }}
  action = {{ type = "fixed_response", status = 503, body = "{{\"down\": true}}", content_type = "application/json" }}

  [[listeners.rules]]
  priority = 5
  conditions = {{ source_ip = ["127.0.0.0/8"], path = ["/local-only"] }}
  action = {{ type = "fixed_response", status = 200, body = "local" }}

{}
{}
{}
{}
{}
"#,
        group("api", &api),
        group("admin", &admin),
        group("web", &web),
        group("mobile", &mobile),
        group("canary", &canary),
    );
    Fleet { ballast: Ballast::start(&config), api, admin, web, mobile, canary }
}

async fn backend_of(resp: reqwest::Response) -> String {
    resp.headers().get("x-backend").map(|v| v.to_str().unwrap_or("").to_string()).unwrap_or_default()
}

#[tokio::test]
async fn each_condition_routes_to_its_group() {
    let f = fleet().await;
    let c = http_client();
    let url = f.ballast.url("main");
    let get = |path: &str| c.get(format!("{url}{path}"));

    assert_eq!(backend_of(get("/api/users").send().await.unwrap()).await, "api");
    assert_eq!(backend_of(get("/v2/api").send().await.unwrap()).await, "api");
    assert_eq!(backend_of(get("/v22/api").send().await.unwrap()).await, "web");
    assert_eq!(backend_of(get("/API/users").send().await.unwrap()).await, "web", "paths are case-sensitive");

    // host AND method; the host glob ignores case.
    let admin_post = c.post(format!("{url}/x")).header("host", "Admin.Example.com").send().await.unwrap();
    assert_eq!(backend_of(admin_post).await, "admin");
    let admin_get = get("/x").header("host", "admin.example.com").send().await.unwrap();
    assert_eq!(backend_of(admin_get).await, "web");

    let beta = get("/").header("x-beta", "ON-please").send().await.unwrap();
    assert_eq!(backend_of(beta).await, "canary");
    assert_eq!(backend_of(get("/").header("x-beta", "off").send().await.unwrap()).await, "web");

    // The client is 127.0.0.1: not in 10/8 or ::1, but in 127/8 for the priority-5 rule.
    assert_eq!(backend_of(get("/").send().await.unwrap()).await, "web");
    let local = get("/local-only").send().await.unwrap();
    assert_eq!(local.status(), 200);
    assert_eq!(local.text().await.unwrap(), "local");
    assert!(f.api.seen().len() == 2 && f.admin.seen().len() == 1);
}

#[tokio::test]
async fn weighted_forward_spreads_by_weight_without_bursts() {
    let f = fleet().await;
    let c = http_client();
    let url = f.ballast.url("main");
    let mut order = String::new();
    for i in 0..40 {
        let query = if i % 2 == 0 { "platform=Mobile" } else { "platform=tablet&x=1" };
        let resp = c.get(format!("{url}/shop?{query}")).send().await.unwrap();
        order.push(if backend_of(resp).await == "mobile" { 'm' } else { 'c' });
    }
    assert_eq!(f.mobile.seen().len(), 30, "{order}");
    assert_eq!(f.canary.seen().len(), 10, "{order}");
    assert!(!order.contains("mmmm"), "a burst: {order}");
    assert!(f.web.seen().is_empty());
}

#[tokio::test]
async fn redirects_and_fixed_responses_are_answered_by_the_balancer() {
    let f = fleet().await;
    let c = http_client();
    let url = f.ballast.url("main");
    let resp = c.get(format!("{url}/old/page?id=7")).header("host", "shop.test").send().await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "https://shop.test/new/old/page?id=7");

    let resp = c.get(format!("{url}/maintenance")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), "{\"down\": true}");
    assert!(f.web.seen().is_empty() && f.api.seen().is_empty(), "no target saw these requests");
}

#[tokio::test]
async fn http_redirects_to_https_with_301() {
    let config = r#"
[[listeners]]
name = "plain"
protocol = "http"
bind = "127.0.0.1:0"
default_action = { type = "redirect", protocol = "https", port = "443" }
"#;
    let ballast = Ballast::start(config);
    let resp = http_client()
        .get(format!("{}/cart?item=3", ballast.url("plain")))
        .header("host", "shop.test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://shop.test/cart?item=3");
}
