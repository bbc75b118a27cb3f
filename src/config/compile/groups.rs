//! `[[groups]]` and `[routing] auto_groups`.

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::config::{ConfigError, Group, GroupDef, Source, AUTO_GROUP};

pub(super) fn compile(defs: &[Arc<GroupDef>], src: &Source<'_>) -> Result<Vec<Group>, ConfigError> {
    let field = |i: usize, name: &str| src.line_of_field("groups", Some(i), name);
    let mut groups = Vec::new();
    for (i, g) in defs.iter().enumerate() {
        let item = format!("[[groups]] \"{}\"", g.name);
        if g.name.is_empty() || g.name == AUTO_GROUP {
            return Err(src.error(field(i, "name"), format!("{item}: reserved or empty name")));
        }
        if groups.iter().any(|x: &Group| x.name == g.name) {
            return Err(src.error(field(i, "name"), format!("{item}: duplicate group name")));
        }
        if g.ratio <= Decimal::ZERO {
            return Err(src.error(
                field(i, "ratio"),
                format!("{item}: ratio must be > 0, got {}", g.ratio),
            ));
        }
        groups.push(Group {
            name: g.name.clone(),
            ratio: g.ratio.normalize(),
            description: g.description.clone(),
            connectivity: g.connectivity.clone(),
            all_channels: g.all_channels,
            selectable: g.selectable,
            user_ratios: Vec::new(),
        });
    }
    // A second pass: a user ratio may name a group defined further down.
    for (i, g) in defs.iter().enumerate() {
        groups[i].user_ratios = user_ratios(g, &groups).map_err(|e| {
            src.error(
                field(i, "user_ratios"),
                format!("[[groups]] \"{}\": {e}", g.name),
            )
        })?;
    }
    Ok(groups)
}

/// `user_ratios`: every name a group (users' `group` names one), every
/// ratio > 0 like a group's own.
fn user_ratios(g: &GroupDef, groups: &[Group]) -> Result<Vec<(String, Decimal)>, String> {
    g.user_ratios
        .iter()
        .map(|(user_group, ratio)| {
            if index_of(groups, user_group).is_none() {
                return Err(format!("user_ratios names unknown group \"{user_group}\""));
            }
            if *ratio <= Decimal::ZERO {
                return Err(format!(
                    "user_ratios: the ratio for \"{user_group}\" must be > 0, got {ratio}"
                ));
            }
            Ok((user_group.clone(), ratio.normalize()))
        })
        .collect()
}

/// The group indexes that `auto` expands to, in order.
pub(super) fn auto_groups(
    names: &[String],
    groups: &[Group],
    src: &Source<'_>,
) -> Result<Vec<usize>, ConfigError> {
    names
        .iter()
        .map(|name| {
            index_of(groups, name).ok_or_else(|| {
                src.error(
                    src.line_of_field("routing", None, "auto_groups"),
                    format!("[routing] auto_groups names unknown group \"{name}\""),
                )
            })
        })
        .collect()
}

pub(super) fn index_of(groups: &[Group], name: &str) -> Option<usize> {
    groups.iter().position(|g| g.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(text: &str) -> Result<Vec<Group>, ConfigError> {
        compile(
            &super::super::items::<GroupDef>("groups", text),
            &Source {
                file: "t.toml",
                text,
            },
        )
    }

    #[test]
    fn groups_need_a_free_name_and_a_positive_ratio() {
        let ok = compiled("[[groups]]\nname = \"a\"\nratio = 0.50\nall_channels = true\n").unwrap();
        assert_eq!(
            (ok[0].ratio.to_string().as_str(), ok[0].all_channels),
            ("0.5", true)
        );
        let e = compiled("[[groups]]\nname = \"auto\"\nratio = 1\n").unwrap_err();
        assert!(e.message.contains("reserved"), "{e}");
        let e =
            compiled("[[groups]]\nname = \"a\"\nratio = 1\n[[groups]]\nname = \"a\"\nratio = 1\n")
                .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        let e = compiled("[[groups]]\nname = \"a\"\n\nratio = 0\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn user_ratios_name_groups_and_are_positive() {
        let text = "[[groups]]\nname = \"claude\"\nratio = 0.5\nuser_ratios = { vip = 0.40, default = 0.45 }\n\
                    [[groups]]\nname = \"vip\"\nratio = 1\n[[groups]]\nname = \"default\"\nratio = 1\n";
        let groups = compiled(text).unwrap();
        let claude = &groups[0];
        assert_eq!(claude.ratio_for(Some("vip")).to_string(), "0.4");
        assert_eq!(claude.ratio_for(Some("default")).to_string(), "0.45");
        assert_eq!(claude.ratio_for(Some("other")).to_string(), "0.5");
        assert_eq!(claude.ratio_for(None).to_string(), "0.5");
        assert_eq!(groups[1].ratio_for(Some("vip")).to_string(), "1");
        let e = compiled("[[groups]]\nname = \"a\"\nratio = 1\n\nuser_ratios = { vpi = 0.4 }\n")
            .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("unknown group \"vpi\""), "{e}");
        let e =
            compiled("[[groups]]\nname = \"a\"\nratio = 1\nuser_ratios = { a = 0 }\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("must be > 0, got 0"), "{e}");
    }

    #[test]
    fn auto_names_known_groups_in_order() {
        let text = "[routing]\nauto_groups = [\"b\", \"x\"]\n";
        let src = Source {
            file: "t.toml",
            text,
        };
        let groups =
            compiled("[[groups]]\nname = \"a\"\nratio = 1\n[[groups]]\nname = \"b\"\nratio = 1\n")
                .unwrap();
        assert_eq!(
            auto_groups(&["b".into(), "a".into()], &groups, &src).unwrap(),
            [1, 0]
        );
        let e = auto_groups(&["x".into()], &groups, &src).unwrap_err();
        assert_eq!(e.line, Some(2));
    }
}
