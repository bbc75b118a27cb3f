//! `[server]` and `[routing]`: addresses, the admin token, limits.

use std::net::SocketAddr;

use crate::config::{expand_vars, ConfigError, RoutingSection, ServerSection, Source};

/// Checks the two sections and expands `admin_token`.
pub(super) fn check(
    server: &mut ServerSection,
    routing: &RoutingSection,
    src: &Source<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (field, value) in [
        ("listen", &server.listen),
        ("admin_listen", &server.admin_listen),
    ] {
        value.parse::<SocketAddr>().map_err(|_| {
            src.error(
                src.line_of_field("server", None, field),
                format!("[server] {field} = \"{value}\" is not an address like 127.0.0.1:8080"),
            )
        })?;
    }
    server.admin_token = match server.admin_token.take() {
        Some(t) => expand_vars(&t, env).ok().filter(|t| !t.is_empty()),
        None => None,
    };
    let admin: SocketAddr = server.admin_listen.parse().expect("checked above");
    if !admin.ip().is_loopback() && server.admin_token.is_none() {
        return Err(src.error(
            src.line_of_field("server", None, "admin_listen"),
            format!(
                "[server] admin_listen = \"{admin}\" is not a loopback address: set admin_token"
            ),
        ));
    }
    if server.max_body_bytes == 0 {
        return Err(src.error(
            src.line_of_field("server", None, "max_body_bytes"),
            "[server] max_body_bytes must be > 0",
        ));
    }
    if !(1024..=1024 * 1024).contains(&server.max_header_bytes) {
        return Err(src.error(
            src.line_of_field("server", None, "max_header_bytes"),
            "[server] max_header_bytes must be between 1024 and 1048576",
        ));
    }
    if routing.max_attempts == 0 {
        return Err(src.error(
            src.line_of_field("routing", None, "max_attempts"),
            "[routing] max_attempts must be >= 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(server: &str, routing: &str) -> Result<ServerSection, ConfigError> {
        let text = format!("[server]\n{server}\n[routing]\n{routing}\n");
        let mut s: ServerSection = toml::from_str(server).unwrap();
        let r: RoutingSection = toml::from_str(routing).unwrap();
        let src = Source {
            file: "t.toml",
            text: &text,
        };
        let env = |name: &str| (name == "TOKEN").then(|| "secret".to_string());
        check(&mut s, &r, &src, &env).map(|()| s)
    }

    #[test]
    fn a_public_admin_listener_needs_a_token() {
        let e = checked("admin_listen = \"0.0.0.0:9191\"", "").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("set admin_token"), "{e}");
        let unset = "admin_listen = \"0.0.0.0:9191\"\nadmin_token = \"${UNSET}\"";
        assert!(checked(unset, "").is_err(), "an unset token is no token");
        let s = checked(
            "admin_listen = \"0.0.0.0:9191\"\nadmin_token = \"${TOKEN}\"",
            "",
        )
        .unwrap();
        assert_eq!(s.admin_token.as_deref(), Some("secret"));
    }

    #[test]
    fn addresses_and_limits_are_checked_at_their_line() {
        let e = checked("listen = \"localhost\"", "").unwrap_err();
        assert!(e.message.contains("is not an address"), "{e}");
        assert_eq!(e.line, Some(2));
        let e = checked("max_body_bytes = 0", "").unwrap_err();
        assert!(e.message.contains("max_body_bytes must be > 0"), "{e}");
        let e = checked("", "max_attempts = 0").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }
}
