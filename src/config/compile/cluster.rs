//! `[cluster]`: the Redis URL, the node's name, timings.

use std::time::Duration;

use crate::config::{
    expand_vars, ClusterSection, ClusterSettings, ConfigError, ServerSection, Source,
};

/// Checks `[cluster]` and expands `${VAR}` in its URL.
pub(super) fn compile(
    c: &ClusterSection,
    server: &ServerSection,
    src: &Source<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ClusterSettings, ConfigError> {
    let err = |field: &str, message: String| {
        src.error(src.line_of_field("cluster", None, field), message)
    };
    let url = expand_vars(&c.redis_url, env).map_err(|var| {
        err(
            "redis_url",
            format!("[cluster] redis_url: ${{{var}}} is not set"),
        )
    })?;
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        // The URL may hold a password: the message never repeats it.
        return Err(err(
            "redis_url",
            "[cluster] redis_url must start with redis:// or rediss://".into(),
        ));
    }
    let node = match &c.node {
        Some(n) => n.clone(),
        None => hostname(),
    };
    if node.is_empty() || node.len() > 64 || !node.chars().all(|ch| ch.is_ascii_graphic()) {
        return Err(err(
            "node",
            format!("[cluster] node = {node:?}: 1 to 64 printable characters, no spaces"),
        ));
    }
    if !(1..=10_000).contains(&c.timeout_ms) {
        return Err(err(
            "timeout_ms",
            "[cluster] timeout_ms must be between 1 and 10000".into(),
        ));
    }
    if !(1..=3600).contains(&c.lease_seconds) {
        return Err(err(
            "lease_seconds",
            "[cluster] lease_seconds must be between 1 and 3600".into(),
        ));
    }
    let admin_url = match &c.admin_url {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            u.trim_end_matches('/').to_string()
        }
        Some(u) => {
            return Err(err(
                "admin_url",
                format!("[cluster] admin_url = {u:?} must start with http:// or https://"),
            ))
        }
        None => format!("http://{}", server.admin_listen),
    };
    let ca_file = match &c.ca_file {
        Some(f) if !url.starts_with("rediss://") => {
            return Err(err(
                "ca_file",
                format!("[cluster] ca_file = {f:?} needs a rediss:// redis_url"),
            ))
        }
        Some(f) => match std::fs::metadata(f) {
            Ok(m) if m.is_file() => Some(std::path::PathBuf::from(f)),
            _ => {
                return Err(err(
                    "ca_file",
                    format!("[cluster] ca_file = {f:?} is not a readable file"),
                ))
            }
        },
        None => None,
    };
    Ok(ClusterSettings {
        redis_url: url,
        node,
        on_redis_error: c.on_redis_error,
        timeout: Duration::from_millis(c.timeout_ms),
        lease: Duration::from_secs(c.lease_seconds),
        admin_url,
        ca_file,
    })
}

/// The host's name, the default node name.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(body: &str) -> Result<ClusterSettings, ConfigError> {
        let text = format!("[cluster]\n{body}\n");
        let doc: crate::config::RawConfig = toml::from_str(&text).unwrap();
        let src = Source {
            file: "t.toml",
            text: &text,
        };
        let env = |name: &str| (name == "PW").then(|| "s3cret".to_string());
        compile(
            doc.cluster.as_ref().unwrap(),
            &ServerSection::default(),
            &src,
            &env,
        )
    }

    #[test]
    fn defaults_and_expansion() {
        let c = compiled("redis_url = \"redis://:${PW}@127.0.0.1:6379/0\"").unwrap();
        assert_eq!(c.redis_url, "redis://:s3cret@127.0.0.1:6379/0");
        assert_eq!(c.node, hostname());
        assert_eq!(c.on_redis_error, crate::config::OnRedisError::Local);
        assert_eq!(c.timeout, Duration::from_millis(100));
        assert_eq!(c.lease, Duration::from_secs(30));
        assert_eq!(c.admin_url, "http://127.0.0.1:9191");
        let c = compiled(
            "redis_url = \"rediss://h:6380\"\nnode = \"edge-1\"\non_redis_error = \"refuse\"\n\
             timeout_ms = 50\nlease_seconds = 2\nadmin_url = \"http://10.0.0.1:9191/\"",
        )
        .unwrap();
        assert_eq!(c.node, "edge-1");
        assert_eq!(c.on_redis_error, crate::config::OnRedisError::Refuse);
        assert_eq!((c.timeout.as_millis(), c.lease.as_secs()), (50, 2));
        assert_eq!(c.admin_url, "http://10.0.0.1:9191");
    }

    #[test]
    fn bad_fields_are_named_at_their_line() {
        let e = compiled("redis_url = \"http://:pw@h\"").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("redis://"), "{e}");
        assert!(!e.message.contains("pw"), "no password in errors: {e}");
        let e = compiled("redis_url = \"redis://${NOPE}\"").unwrap_err();
        assert!(e.message.contains("NOPE"), "{e}");
        let e = compiled("redis_url = \"redis://h\"\nnode = \"a b\"").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = compiled("redis_url = \"redis://h\"\ntimeout_ms = 0").unwrap_err();
        assert!(e.message.contains("timeout_ms"), "{e}");
        let e = compiled("redis_url = \"redis://h\"\nlease_seconds = 0").unwrap_err();
        assert!(e.message.contains("lease_seconds"), "{e}");
        let e = compiled("redis_url = \"redis://h\"\nca_file = \"/etc/hostname\"").unwrap_err();
        assert!(e.message.contains("needs a rediss://"), "{e}");
        let e = compiled("redis_url = \"rediss://h\"\nca_file = \"/nonexistent.pem\"").unwrap_err();
        assert!(e.message.contains("not a readable file"), "{e}");
        let bad: Result<crate::config::RawConfig, _> =
            toml::from_str("[cluster]\nredis_url = \"redis://h\"\nmode = \"x\"\n");
        assert!(bad.is_err(), "unknown fields are errors");
        let bad: Result<crate::config::RawConfig, _> =
            toml::from_str("[cluster]\nredis_url = \"redis://h\"\non_redis_error = \"ignore\"\n");
        assert!(bad.is_err());
    }
}
