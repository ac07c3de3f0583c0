//! Checking the information-flow labels of a configuration: per tool (`labels`), per server
//! (`servers.NAME.labels`) and from MCP tool annotations (`annotation_labels`).

use super::check::{Checker, valid_name};
use super::raw::RawConfig;
use super::{AnnotationLabels, ToolRoute};
use crate::policy::{Name, PolicySet};
use std::collections::{BTreeMap, BTreeSet};

/// The configured labels of each tool, and the annotation defaults.
pub(super) struct CheckedLabels {
    pub by_tool: BTreeMap<Name, Vec<Name>>,
    pub annotations: AnnotationLabels,
}

impl CheckedLabels {
    /// Every label a tool can carry: configured ones and those annotations give.
    pub fn known(&self) -> BTreeSet<Name> {
        self.by_tool
            .values()
            .flatten()
            .chain(&self.annotations.open_world)
            .chain(&self.annotations.destructive)
            .cloned()
            .collect()
    }

    pub fn apply(&self, policies: &mut PolicySet) {
        for (tool, labels) in &self.by_tool {
            policies.add_labels(tool, labels);
        }
    }
}

fn label_list(c: &mut Checker, path: &str, labels: &[String]) -> Vec<Name> {
    let mut out: Vec<Name> = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        if !valid_name(label) {
            c.problem(
                format!("{path}[{i}]"),
                format!("{label:?} is not a label; a label uses letters, digits, '_', '-' and '.'"),
            );
        } else if !out.iter().any(|l| **l == **label) {
            out.push(label.as_str().into());
        }
    }
    out
}

pub(super) fn check_labels(
    c: &mut Checker,
    raw: &RawConfig,
    tools: &BTreeMap<Name, ToolRoute>,
) -> CheckedLabels {
    let mut by_tool: BTreeMap<Name, Vec<Name>> = BTreeMap::new();
    for (server, config) in &raw.servers {
        let labels = label_list(c, &format!("servers.{server}.labels"), &config.labels);
        if labels.is_empty() {
            continue;
        }
        for (tool, route) in tools {
            if route.server == *server {
                by_tool
                    .entry(tool.clone())
                    .or_default()
                    .extend(labels.iter().cloned());
            }
        }
    }
    for (tool, labels) in &raw.labels {
        let path = format!("labels.{tool}");
        let labels = label_list(c, &path, labels);
        if let Some(name) = c.tool(tools, path, tool) {
            let entry = by_tool.entry(name).or_default();
            for label in labels {
                if !entry.contains(&label) {
                    entry.push(label);
                }
            }
        }
    }
    let defaults = &raw.annotation_labels;
    let annotations = AnnotationLabels {
        open_world: match &defaults.open_world {
            Some(list) => label_list(c, "annotation_labels.open_world", list),
            None => vec!["untrusted".into()],
        },
        destructive: match &defaults.destructive {
            Some(list) => label_list(c, "annotation_labels.destructive", list),
            None => vec!["destructive".into()],
        },
    };
    CheckedLabels {
        by_tool,
        annotations,
    }
}
