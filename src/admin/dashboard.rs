//! The live dashboard: one HTML page that polls the admin API.

use axum::response::Html;

/// `GET /`.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ballast</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:1.5em}
table{border-collapse:collapse} td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
.healthy{color:#0a0}.unhealthy{color:#c00}.draining{color:#a60}.initial{color:#06c}
</style></head>
<body><h1>ballast</h1><div id="groups">loading…</div>
<script>
async function refresh(){
  const groups = await (await fetch('/api/v1/target-groups')).json();
  let html = '';
  for (const g of groups) {
    const targets = await (await fetch('/api/v1/target-groups/' + encodeURIComponent(g.name) + '/targets')).json();
    html += '<h2>' + g.name + ' <small>(' + g.algorithm + ')</small></h2><table><tr><th>target</th><th>weight</th><th>zone</th><th>state</th><th>reason</th></tr>';
    for (const t of targets) {
      html += '<tr><td>' + t.address + '</td><td>' + t.weight + '</td><td>' + (t.zone || '') + '</td><td class="' + t.state + '">' + t.state + '</td><td>' + (t.reason || '') + '</td></tr>';
    }
    html += '</table>';
  }
  document.getElementById('groups').innerHTML = html || 'no target groups';
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"#;
