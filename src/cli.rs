//! Command line (docs/operations.md, "Command line"): `run`, `check`, `key new`, `key create`,
//! `key revoke`, `user token`, `usage`, `--version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, sha256};
use crate::health::HealthRegistry;
use crate::keys::fresh_secret;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "LLM API edge proxy: groups, ratios, failover, exact billing"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (for the default `run`)
    #[arg(short, long, global = true, default_value = "config.toml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway (the default)
    Run,
    /// Validate the config and print groups, models per group and keys
    Check,
    /// Manage client keys
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Manage users
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Print spend and tokens from the running gateway's admin API
    Usage {
        /// Group rows by: group, user, key, model or channel
        #[arg(long, default_value = "group")]
        by: String,
        /// How far back: 90s, 30m, 24h, 7d
        #[arg(long, default_value = "24h")]
        since: String,
        /// Every node of the cluster, merged (cluster mode)
        #[arg(long)]
        cluster: bool,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Print a fresh secret and the TOML line that stores its hash
    New {
        #[arg(long, default_value = "new-key")]
        name: String,
    },
    /// Create a managed key in the running gateway (admin API) and print
    /// its secret, shown only this once
    Create {
        /// The user the key is for
        #[arg(long)]
        user: String,
        /// Ordered groups, comma-separated (default: the user's group)
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
        /// Key name (default: USER-<6 random hex digits>)
        #[arg(long)]
        name: Option<String>,
    },
    /// Revoke a managed key in the running gateway: it stops working at once
    Revoke { name: String },
}

#[derive(Subcommand)]
enum UserAction {
    /// Print a fresh user token (user API and console sign-in) and the
    /// TOML line that stores its hash
    Token {
        #[arg(long)]
        name: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            init_logging();
            match crate::server::run(&cli.config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("tollgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check => check(&cli.config),
        Command::Usage { by, since, cluster } => {
            match crate::usage_cli::run(&cli.config, &by, &since, cluster) {
                Ok(table) => {
                    print!("{table}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tollgate usage: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Key {
            action: KeyAction::New { name },
        } => {
            let secret = fresh_secret("sk-tg-");
            println!("secret (give it to the user; it is not stored): {secret}");
            println!();
            println!("[[keys]]");
            println!("name = {name:?}");
            println!("key_sha256 = \"{}\"", hex::encode(sha256(&secret)));
            ExitCode::SUCCESS
        }
        Command::Key {
            action: KeyAction::Create { user, groups, name },
        } => {
            let name = name.unwrap_or_else(|| format!("{user}-{}", &fresh_secret("")[..6]));
            let mut body = serde_json::json!({"user": user, "name": name});
            if let Some(groups) = groups {
                body["groups"] = serde_json::json!(groups);
            }
            admin_command(
                "key create",
                &cli.config,
                "POST",
                "/admin/keys",
                Some(&body),
                |doc| {
                    println!(
                        "secret of key {:?} (give it to {user}; it is not stored): {}",
                        doc["name"].as_str().unwrap_or(""),
                        doc["key"].as_str().unwrap_or("")
                    );
                    println!("groups: {}", doc["groups"]);
                },
            )
        }
        Command::Key {
            action: KeyAction::Revoke { name },
        } => {
            // Encoded: a name with a space or `/` must not break the request line.
            let path = format!("/admin/keys/{}", crate::providers::encode_segment(&name));
            admin_command("key revoke", &cli.config, "DELETE", &path, None, |_| {
                println!("revoked key {name:?}");
            })
        }
        Command::User {
            action: UserAction::Token { name },
        } => {
            let token = fresh_secret("ut-tg-");
            println!("user token (give it to {name}; it is not stored): {token}");
            println!();
            println!("# in the [[users]] item with name = {name:?}:");
            println!("token_sha256 = \"{}\"", hex::encode(sha256(&token)));
            ExitCode::SUCCESS
        }
    }
}

/// Calls the running gateway's admin API; on success `done` prints from
/// the JSON answer, else the API's error message is printed (exit 1).
fn admin_command(
    what: &str,
    config: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    done: impl FnOnce(&serde_json::Value),
) -> ExitCode {
    let answer = crate::usage_cli::admin_call(config, method, path, body);
    let (status, body) = match answer {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("tollgate {what}: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if (200..300).contains(&status) {
        done(&doc);
        return ExitCode::SUCCESS;
    }
    let message = doc["error"]["message"]
        .as_str()
        .map_or_else(|| doc.to_string(), str::to_string);
    eprintln!("tollgate {what}: {status}: {message}");
    ExitCode::FAILURE
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,pingora_core=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Token prices in USD per 1M tokens, as `tollgate check` prints them.
fn prices_line(p: &config::TokenPrices) -> String {
    format!(
        "input {}, output {}, cached_input {}, cache_write {}, cache_write_1h {}",
        p.input, p.output, p.cached_input, p.cache_write, p.cache_write_1h
    )
}

/// A model's media prices as `tollgate check` prints them, if it has any.
fn media_line(m: &config::MediaPrices) -> Option<String> {
    let mut parts: Vec<String> = m
        .per_image
        .iter()
        .map(|(size, usd)| format!("per_image {size} {usd}"))
        .collect();
    if let Some(v) = m.per_second {
        parts.push(format!("per_second {v}"));
    }
    if let Some(v) = m.per_1k_chars {
        parts.push(format!("per_1k_chars {v}"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn check(path: &std::path::Path) -> ExitCode {
    let loaded =
        match config::load_file(path, &HealthRegistry::default(), 1, &mut Default::default()) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    let snap = &loaded.snapshot;
    println!("{}: OK", path.display());
    println!("groups:");
    for (i, g) in snap.groups.iter().enumerate() {
        let keys = snap
            .keys_by_hash
            .values()
            .filter(|k| k.groups.contains(&i))
            .count();
        println!(
            "  {} (ratio {}, {} key(s)): {}",
            g.name,
            g.ratio,
            keys,
            snap.models_of_group(i).join(", ")
        );
        for (user_group, ratio) in &g.user_ratios {
            println!("    ratio {ratio} for users in group {user_group}");
        }
    }
    let enabled = snap.channels.iter().filter(|c| c.enabled()).count();
    println!("channels: {} ({enabled} enabled)", snap.channels.len());
    println!("models priced: {}", snap.prices.len());
    for (name, price) in snap.prices.iter().filter(|(_, p)| !p.tiers.is_empty()) {
        println!("  {name}: {}", prices_line(&price.base()));
        for t in &price.tiers {
            println!(
                "    above {} input tokens: {}",
                t.above_input_tokens,
                prices_line(&t.prices)
            );
        }
    }
    for (name, price) in &snap.prices {
        if let Some(line) = media_line(&price.media) {
            println!("  {name}: {line}");
        }
    }
    let mut aliases: Vec<_> = snap.aliases.iter().collect();
    aliases.sort_unstable();
    for (alias, model) in aliases {
        println!("  alias {alias} -> {model}");
    }
    println!(
        "users: {}, keys: {}",
        snap.users.len(),
        snap.keys_by_hash.len()
    );
    ExitCode::SUCCESS
}
