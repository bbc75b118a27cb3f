//! `tollgate check -c FILE`: the summary of a good config, and for each kind
//! of invalid config exit 1 with `file:LINE: message` naming the item.

mod common;

use std::process::Command;

use common::sha256_hex;

fn good_config() -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:19191"
data_dir = "/nonexistent/tollgate-check"

[routing]
auto_groups = ["cheap", "default"]

[[groups]]
name = "default"
ratio = 1.0
all_channels = true

[[groups]]
name = "cheap"
ratio = 0.5

[[models]]
name = "gpt-4o"
input = 2.5
output = 10
aliases = ["gpt-4o-latest", "4o"]

[[models]]
name = "gpt-4o-mini"
input = 0.15
output = 0.6

[[channels]]
name = "openai"
type = "openai"
base_url = "https://api.openai.com"
api_key = "sk-x"
groups = ["cheap"]
models = ["gpt-4o-mini"]
weight = 2

[[channels]]
name = "mock"
type = "mock"

[[users]]
name = "alice"
group = "cheap"

[[keys]]
name = "k1"
key_sha256 = "{}"
groups = ["cheap", "default"]
models = ["gpt-*"]
allow_ips = ["10.0.0.0/8", "::1"]

[[keys]]
name = "k2"
user = "alice"
key_sha256 = "{}"

[[keys]]
name = "k3"
key = "sk-plain-demo"
groups = ["auto"]
"#,
        sha256_hex("one"),
        sha256_hex("two")
    )
}

/// Runs `tollgate check -c` on `text`; returns (exit code, stdout, stderr, path).
fn check(text: &str) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

#[test]
fn a_good_config_prints_groups_models_and_key_counts() {
    let (code, stdout, stderr, path) = check(&good_config());
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains(&format!("{path}: OK")), "{stdout}");
    // k1 and k3 (auto = cheap, default) reach default; all three reach cheap.
    assert!(
        stdout.contains("  default (ratio 1, 2 key(s)): gpt-4o, gpt-4o-mini\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  cheap (ratio 0.5, 3 key(s)): gpt-4o-mini\n"),
        "{stdout}"
    );
    assert!(stdout.contains("channels: 2 (2 enabled)"), "{stdout}");
    assert!(
        stdout.contains("  alias 4o -> gpt-4o\n  alias gpt-4o-latest -> gpt-4o\n"),
        "{stdout}"
    );
    assert!(stdout.contains("users: 1, keys: 3"), "{stdout}");
    assert!(
        stdout.contains("[[keys]] \"k3\": plaintext `key`"),
        "plaintext keys are warned about: {stdout}"
    );
    assert!(!stdout.contains("sk-plain-demo"), "no secret printed");
}

/// Mark of the line an error must point at.
const HERE: &str = " #<- error here";

struct Bad {
    what: &'static str,
    /// Text to find in the good config ...
    find: &'static str,
    /// ... and its replacement; the line the error points at carries HERE.
    replace: &'static str,
    /// Must appear in the message.
    message_has: &'static [&'static str],
}

fn bad_configs() -> Vec<Bad> {
    vec![
        Bad {
            what: "unknown field",
            find: "ratio = 0.5\n",
            replace: "ratio = 0.5\nratios = 2 #<- error here\n",
            message_has: &["unknown field `ratios`"],
        },
        Bad {
            what: "unknown field in [server]",
            find: "data_dir = ",
            replace: "listn = \"x\" #<- error here\ndata_dir = ",
            message_has: &["unknown field `listn`"],
        },
        Bad {
            what: "duplicate group",
            find: "name = \"cheap\"\n",
            replace: "name = \"default\" #<- error here\n",
            message_has: &["[[groups]] \"default\"", "duplicate group name"],
        },
        Bad {
            what: "duplicate channel",
            find: "name = \"mock\"\n",
            replace: "name = \"openai\" #<- error here\n",
            message_has: &["[[channels]] \"openai\"", "duplicate channel name"],
        },
        Bad {
            what: "duplicate key",
            find: "name = \"k2\"\n",
            replace: "name = \"k1\" #<- error here\n",
            message_has: &["[[keys]] \"k1\"", "duplicate key name"],
        },
        Bad {
            what: "dangling group of a channel",
            find: "groups = [\"cheap\"]\nmodels",
            replace: "groups = [\"cheep\"] #<- error here\nmodels",
            message_has: &["[[channels]] \"openai\"", "unknown group \"cheep\""],
        },
        Bad {
            what: "dangling group of a key",
            find: "groups = [\"cheap\", \"default\"]\nmodels",
            replace: "groups = [\"cheap\", \"defualt\"] #<- error here\nmodels",
            message_has: &["[[keys]] \"k1\"", "unknown group \"defualt\""],
        },
        Bad {
            what: "dangling group of a user",
            find: "group = \"cheap\"\n",
            replace: "group = \"nope\" #<- error here\n",
            message_has: &["[[users]] \"alice\"", "unknown group \"nope\""],
        },
        Bad {
            what: "dangling user of a key",
            find: "user = \"alice\"",
            replace: "user = \"alicia\" #<- error here",
            message_has: &["[[keys]] \"k2\"", "unknown user \"alicia\""],
        },
        Bad {
            what: "dangling auto group",
            find: "auto_groups = [\"cheap\", \"default\"]",
            replace: "auto_groups = [\"cheap\", \"gone\"] #<- error here",
            message_has: &["auto_groups", "unknown group \"gone\""],
        },
        Bad {
            what: "ratio 0",
            find: "ratio = 0.5",
            replace: "ratio = 0 #<- error here",
            message_has: &["[[groups]] \"cheap\"", "ratio must be > 0"],
        },
        Bad {
            what: "negative ratio",
            find: "ratio = 0.5",
            replace: "ratio = -0.5 #<- error here",
            message_has: &["[[groups]] \"cheap\"", "ratio must be > 0"],
        },
        Bad {
            what: "weight 0",
            find: "weight = 2",
            replace: "weight = 0 #<- error here",
            message_has: &["[[channels]] \"openai\"", "weight must be > 0"],
        },
        Bad {
            what: "served model without a price",
            find: "models = [\"gpt-4o-mini\"]\n",
            replace: "models = [\"gpt-4o-mini\", \"gpt-5\"] #<- error here\n",
            message_has: &["[[channels]] \"openai\"", "\"gpt-5\"", "no price"],
        },
        Bad {
            what: "mapped model without a price",
            find: "weight = 2",
            replace: "weight = 2\nmodel_map = { \"o9\" = \"o9-2030\" } #<- error here",
            message_has: &["[[channels]] \"openai\"", "\"o9\"", "no price"],
        },
        Bad {
            what: "model listed twice",
            find: "models = [\"gpt-4o-mini\"]\n",
            replace: "models = [\"gpt-4o-mini\", \"gpt-4o\", \"gpt-4o-mini\"] #<- error here\n",
            message_has: &["[[channels]] \"openai\"", "\"gpt-4o-mini\" is listed twice"],
        },
        Bad {
            what: "bad CIDR",
            find: "allow_ips = [\"10.0.0.0/8\", \"::1\"]",
            replace: "allow_ips = [\"10.0.0.0/33\"] #<- error here",
            message_has: &["[[keys]] \"k1\"", "\"10.0.0.0/33\""],
        },
        Bad {
            what: "bad glob",
            find: "models = [\"gpt-*\"]",
            replace: "models = [\"gpt-[\"] #<- error here",
            message_has: &["[[keys]] \"k1\"", "\"gpt-[\""],
        },
        Bad {
            what: "non-loopback admin without a token",
            find: "admin_listen = \"127.0.0.1:19191\"",
            replace: "admin_listen = \"0.0.0.0:19191\" #<- error here",
            message_has: &["admin_listen", "0.0.0.0:19191", "admin_token"],
        },
        Bad {
            what: "bad base_url",
            find: "base_url = \"https://api.openai.com\"",
            replace: "base_url = \"api.openai.com/v1\" #<- error here",
            message_has: &["[[channels]] \"openai\"", "base_url", "api.openai.com/v1"],
        },
        Bad {
            what: "bad key hash",
            find: "key_sha256 = \"",
            replace: "key_sha256 = \"abc\" #<- error here\nx = \"",
            message_has: &["[[keys]] \"k1\"", "64 hex"],
        },
    ]
}

#[test]
fn each_invalid_config_names_the_item_and_its_line() {
    let good = good_config();
    let mut failures = Vec::new();
    for bad in bad_configs() {
        assert!(good.contains(bad.find), "{}: pattern not found", bad.what);
        let mut text = good.replacen(bad.find, bad.replace, 1);
        if bad.what == "bad key hash" {
            // Keep the file otherwise valid: drop the original hash line.
            let start = text.find("x = \"").unwrap();
            let end = start + text[start..].find('\n').unwrap() + 1;
            text.replace_range(start..end, "");
        }
        let line = text
            .lines()
            .position(|l| l.ends_with(HERE))
            .unwrap_or_else(|| panic!("{}: no marked line", bad.what))
            + 1;
        let (code, stdout, stderr, path) = check(&text);
        let location = format!("{path}:{line}: ");
        let mut wrong = Vec::new();
        if code != 1 {
            wrong.push(format!("exit code {code}"));
        }
        if !stderr.contains(&location) {
            wrong.push(format!("no {location:?}"));
        }
        for part in bad.message_has {
            if !stderr.contains(part) {
                wrong.push(format!("no {part:?}"));
            }
        }
        if stdout.contains(": OK") {
            wrong.push("reported OK".into());
        }
        if !wrong.is_empty() {
            failures.push(format!("{}: {} in {stderr:?}", bad.what, wrong.join(", ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn an_unset_variable_disables_its_channel_with_a_warning() {
    let text = good_config().replace(
        "api_key = \"sk-x\"",
        "api_key = \"${TOLLGATE_TEST_VARIABLE_THAT_IS_NEVER_SET}\"",
    );
    let (code, stdout, _, _) = check(&text);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("TOLLGATE_TEST_VARIABLE_THAT_IS_NEVER_SET")
            && stdout.contains("channel disabled"),
        "{stdout}"
    );
    assert!(stdout.contains("channels: 2 (1 enabled)"), "{stdout}");
}

#[test]
fn a_missing_file_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-c", "/nonexistent/tollgate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tollgate.toml"));
}

/// Model names the official Anthropic SDK (2.12) flags as end of life in
/// every call (`DEPRECATED_MODELS` in anthropic/resources/messages).
const END_OF_LIFE_MODELS: &[&str] = &[
    "claude-3-sonnet-20240229",
    "claude-3-opus-20240229",
    "claude-3-7-sonnet-latest",
    "claude-3-7-sonnet-20250219",
    "claude-3-5-haiku-latest",
    "claude-3-5-haiku-20241022",
    "claude-opus-4-0",
    "claude-opus-4-20250514",
    "claude-sonnet-4-0",
    "claude-sonnet-4-20250514",
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
];

/// The example config loads, and a newcomer copying its model names gets
/// no deprecation warning from the SDK.
#[test]
fn the_example_config_is_valid_and_names_current_models() {
    let text = include_str!("../config.example.toml");
    let (code, stdout, stderr, _) = check(text);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    for model in END_OF_LIFE_MODELS {
        assert!(
            !text.contains(&format!("\"{model}\"")),
            "config.example.toml names {model}, which is end of life"
        );
    }
    assert!(text.contains("\"claude-sonnet-4-6\""));
}

/// Long-context tiers, 1-hour cache writes, per-user-group ratios and
/// budget periods: printed by `check`, and each mistake refused on its
/// line.
fn pricing_config() -> String {
    format!(
        r#"[server]
data_dir = "/nonexistent/tollgate-check"

[[groups]]
name = "claude"
ratio = 0.5
user_ratios = {{ vip = 0.4 }}

[[groups]]
name = "vip"
ratio = 1

[[models]]
name = "claude-sonnet-4-6"
input = 3
output = 15
cached_input = 0.3
cache_write = 3.75
cache_write_1h = 6
tiers = [{{ above_input_tokens = 200000, input = 6.0, output = 22.5, cached_input = 0.6, cache_write = 7.5 }}]

[[channels]]
name = "mock"
type = "mock"
groups = ["claude"]

[[users]]
name = "bob"
group = "vip"
budget_usd = 50
budget_period = "month"

[[keys]]
name = "k1"
user = "bob"
key_sha256 = "{}"
groups = ["claude"]
budget_usd = 5
budget_period = "day"
"#,
        sha256_hex("one")
    )
}

#[test]
fn tiers_and_user_ratios_are_printed() {
    let (code, stdout, stderr, _) = check(&pricing_config());
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("  claude (ratio 0.5, 1 key(s)): claude-sonnet-4-6\n    ratio 0.4 for users in group vip\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  claude-sonnet-4-6: input 3, output 15, cached_input 0.3, cache_write 3.75, cache_write_1h 6\n\
             \x20   above 200000 input tokens: input 6, output 22.5, cached_input 0.6, cache_write 7.5, cache_write_1h 6\n"
        ),
        "{stdout}"
    );
}

#[test]
fn bad_pricing_rules_name_the_item_and_its_line() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "above_input_tokens = 200000,",
            "above_input_tokens = 0,",
            &[
                "[[models]] \"claude-sonnet-4-6\"",
                "above_input_tokens must be > 0",
            ],
        ),
        (
            "cache_write = 7.5 }]",
            "cache_write = -7.5 }]",
            &["[[models]] \"claude-sonnet-4-6\"", "has a price < 0"],
        ),
        (
            "cache_write = 7.5 }]",
            "cache_write = 7.5 }, { above_input_tokens = 200000, input = 9 }]",
            &["two tiers above 200000 input tokens"],
        ),
        (
            "cache_write = 7.5 }]",
            "cache_write = 7.5, per_request = 1 }]",
            &["unknown field `per_request`"],
        ),
        (
            "user_ratios = { vip = 0.4 }",
            "user_ratios = { vpi = 0.4 }",
            &["[[groups]] \"claude\"", "unknown group \"vpi\""],
        ),
        (
            "user_ratios = { vip = 0.4 }",
            "user_ratios = { vip = -1 }",
            &["[[groups]] \"claude\"", "must be > 0"],
        ),
        (
            "budget_period = \"day\"",
            "budget_period = \"hour\"",
            &["unknown variant `hour`"],
        ),
        (
            "budget_usd = 5\nbudget_period = \"day\"",
            "budget_period = \"day\"",
            &[
                "[[keys]] \"k1\"",
                "budget_period = \"day\" needs a budget_usd",
            ],
        ),
        (
            "budget_usd = 50\nbudget_period = \"month\"",
            "budget_period = \"month\"",
            &["[[users]] \"bob\"", "needs a budget_usd"],
        ),
    ];
    let good = pricing_config();
    for (find, replace, message_has) in cases {
        assert!(good.contains(find), "{find}");
        let text = good.replacen(find, replace, 1);
        let line = text
            .lines()
            .position(|l| l.contains(replace.lines().last().unwrap()))
            .unwrap()
            + 1;
        let (code, _, stderr, path) = check(&text);
        assert_eq!(code, 1, "{replace}: {stderr}");
        assert!(
            stderr.contains(&format!("{path}:{line}: ")),
            "{replace}: {stderr}"
        );
        for part in *message_has {
            assert!(stderr.contains(part), "{replace}: no {part:?} in {stderr}");
        }
    }
}
