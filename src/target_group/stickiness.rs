//! Sticky sessions: which target a request's cookie names, and the cookie a response sets.
//!
//! `lb_cookie`: ballast sets `BALLAST-<group>` on every response, naming the target until
//! `duration` from now. `app_cookie`: when the application sets its named cookie, ballast sets
//! `BALLAST-APP-<group>` beside it; a request carrying both goes to the same target. Values are
//! sealed, so a forged, altered or stale cookie names nothing and the request is balanced anew.

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};

use super::sticky_cookie::CookieSealer;
use crate::config::Stickiness;

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The name of ballast's own cookie for `group`.
pub fn cookie_name(group: &str, stickiness: &Stickiness) -> String {
    match stickiness {
        Stickiness::LbCookie { .. } => format!("BALLAST-{group}"),
        Stickiness::AppCookie { .. } => format!("BALLAST-APP-{group}"),
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
fn request_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The target address a request is stuck to, if its cookies say so authentically.
pub fn stuck_address(
    sealer: &CookieSealer,
    group: &str,
    stickiness: &Stickiness,
    headers: &HeaderMap,
) -> Option<String> {
    if let Stickiness::AppCookie { cookie, .. } = stickiness {
        request_cookie(headers, cookie)?;
    }
    let value = request_cookie(headers, &cookie_name(group, stickiness))?;
    sealer.open(group, value, now_unix())
}

/// Adds ballast's stickiness cookie to a response from `target`, when the kind asks for one.
pub fn stick(sealer: &CookieSealer, group: &str, stickiness: &Stickiness, target: &str, response: &mut HeaderMap) {
    let duration = match stickiness {
        Stickiness::LbCookie { duration } => duration,
        Stickiness::AppCookie { cookie, duration } => {
            let prefix = format!("{cookie}=");
            let app_set_it = response
                .get_all(SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.trim_start().starts_with(&prefix));
            if !app_set_it {
                return;
            }
            duration
        }
    };
    let seconds = duration.get().as_secs();
    let value = sealer.seal(group, target, now_unix() + seconds);
    let cookie = format!("{}={value}; Max-Age={seconds}; Path=/; HttpOnly", cookie_name(group, stickiness));
    if let Ok(header) = HeaderValue::try_from(cookie) {
        response.append(SET_COOKIE, header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;

    fn lb() -> Stickiness {
        Stickiness::LbCookie { duration: Duration::secs(60) }
    }

    #[test]
    fn a_sealed_cookie_round_trips_through_headers() {
        let sealer = CookieSealer::from_secret(b"test");
        let mut response = HeaderMap::new();
        stick(&sealer, "web", &lb(), "10.0.0.1:80", &mut response);
        let set = response[SET_COOKIE].to_str().unwrap();
        let pair = set.split(';').next().unwrap();
        let mut request = HeaderMap::new();
        request.insert(COOKIE, format!("other=1; {pair}").parse().unwrap());
        assert_eq!(stuck_address(&sealer, "web", &lb(), &request).as_deref(), Some("10.0.0.1:80"));
        assert_eq!(stuck_address(&sealer, "api", &lb(), &request), None, "another group's cookie name");
    }

    #[test]
    fn app_cookie_needs_the_application_cookie_too() {
        let sealer = CookieSealer::from_secret(b"test");
        let app = Stickiness::AppCookie { cookie: "SESSIONID".into(), duration: Duration::secs(60) };
        let mut response = HeaderMap::new();
        stick(&sealer, "web", &app, "10.0.0.1:80", &mut response);
        assert!(response.get(SET_COOKIE).is_none(), "no app cookie, no ballast cookie");
        response.insert(SET_COOKIE, "SESSIONID=abc; Path=/".parse().unwrap());
        stick(&sealer, "web", &app, "10.0.0.1:80", &mut response);
        let ours = response.get_all(SET_COOKIE).iter().nth(1).unwrap().to_str().unwrap().to_string();
        let pair = ours.split(';').next().unwrap().to_string();
        let mut request = HeaderMap::new();
        request.insert(COOKIE, pair.parse().unwrap());
        assert_eq!(stuck_address(&sealer, "web", &app, &request), None);
        request.insert(COOKIE, format!("SESSIONID=abc; {pair}").parse().unwrap());
        assert_eq!(stuck_address(&sealer, "web", &app, &request).as_deref(), Some("10.0.0.1:80"));
    }
}
