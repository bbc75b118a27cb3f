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
        });
    }
    Ok(groups)
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
