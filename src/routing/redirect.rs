//! Redirect actions: a `Location` built from `#{protocol}`, `#{host}`, `#{port}`, `#{path}`,
//! `#{query}` placeholders, as ALB builds it.

use super::request_head::RequestHead;

/// A redirect's parts, each a template over the request.
#[derive(Debug, Clone)]
pub struct RedirectTemplate {
    pub protocol: String,
    pub host: String,
    pub port: String,
    pub path: String,
    pub query: String,
    pub status: u16,
}

impl RedirectTemplate {
    /// The absolute URL to send the client to.
    pub fn location(&self, head: &RequestHead<'_>) -> String {
        let fill = |t: &str| fill(t, head);
        let protocol = fill(&self.protocol).to_ascii_lowercase();
        let host = fill(&self.host);
        let port = fill(&self.port);
        let mut path = fill(&self.path);
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        let query = fill(&self.query);
        let default_port = if protocol == "https" { "443" } else { "80" };
        let mut url = format!("{protocol}://{host}");
        if port != default_port && !port.is_empty() {
            url.push(':');
            url.push_str(&port);
        }
        url.push_str(&path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        url
    }
}

fn fill(template: &str, head: &RequestHead<'_>) -> String {
    template
        .replace("#{protocol}", head.protocol)
        .replace("#{host}", head.host)
        .replace("#{port}", &head.port.to_string())
        // ALB's #{path} is the path without its leading slash; templates write `/#{path}`.
        .replace("#{path}", head.path.strip_prefix('/').unwrap_or(head.path))
        .replace("#{query}", head.query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Fields;
    use http::HeaderMap;

    fn head<'a>(headers: &'a HeaderMap, protocol: &'static str, port: u16) -> RequestHead<'a> {
        RequestHead {
            method: "GET",
            host: "shop.example",
            path: "/cart/items",
            query: "a=1&b=2",
            headers: Fields::Map(headers),
            source_ip: "127.0.0.1".parse().unwrap(),
            protocol,
            port,
        }
    }

    fn template(protocol: &str, port: &str) -> RedirectTemplate {
        RedirectTemplate {
            protocol: protocol.into(),
            host: "#{host}".into(),
            port: port.into(),
            path: "/#{path}".into(),
            query: "#{query}".into(),
            status: 301,
        }
    }

    #[test]
    fn http_to_https_keeps_host_path_and_query() {
        let h = HeaderMap::new();
        let t = template("https", "443");
        assert_eq!(t.location(&head(&h, "http", 80)), "https://shop.example/cart/items?a=1&b=2");
    }

    #[test]
    fn a_non_default_port_is_written() {
        let h = HeaderMap::new();
        assert_eq!(
            template("#{protocol}", "#{port}").location(&head(&h, "http", 8080)),
            "http://shop.example:8080/cart/items?a=1&b=2"
        );
    }

    #[test]
    fn fixed_parts_replace_the_request_parts() {
        let h = HeaderMap::new();
        let mut t = template("https", "8443");
        t.host = "www.#{host}".into();
        t.path = "/new/#{path}".into();
        t.query = "".into();
        assert_eq!(t.location(&head(&h, "http", 80)), "https://www.shop.example:8443/new/cart/items");
    }
}
