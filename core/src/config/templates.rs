//! Checking the `templates` of a configuration: names, references, tools, and a simulated run through
//! the policy engine that finds steps an ordering rule would always deny.

use super::check::{Checker, valid_name};
use super::raw::RawConfig;
use super::{Step, Template, ToolRoute};
use crate::policy::{
    self, AllowList, ApprovalGate, Buckets, CallRequest, Decision, Name, PolicySet, RateState,
    RunningCalls, WorkflowHistory,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub(super) fn check_templates(
    c: &mut Checker,
    raw: &RawConfig,
    tools: &BTreeMap<Name, ToolRoute>,
    policies: &PolicySet,
    approval_timeout: Duration,
) -> BTreeMap<String, Arc<Template>> {
    let mut templates = BTreeMap::new();
    for (name, template) in &raw.templates {
        let path = format!("templates.{name}");
        if !valid_name(name) {
            c.problem(
                &path,
                "a template name uses letters, digits, '_', '-' and '.' only",
            );
        }
        if template.steps.is_empty() {
            c.problem(
                format!("{path}.steps"),
                "a template needs at least one step",
            );
        }
        let inputs = check_inputs(c, &path, &template.inputs);
        let mut steps = Vec::new();
        let mut seen = HashSet::new();
        for (i, step) in template.steps.iter().enumerate() {
            let step_path = format!("{path}.steps[{i}]");
            if !valid_name(&step.name) {
                c.problem(
                    format!("{step_path}.name"),
                    "a step name uses letters, digits, '_', '-' and '.' only",
                );
            } else if !seen.insert(step.name.as_str()) {
                c.problem(
                    format!("{step_path}.name"),
                    format!("duplicate step name {:?}", step.name),
                );
            }
            let declared = (!inputs.is_empty()).then_some(inputs.as_slice());
            if let Err(message) =
                crate::template::check_references(&step.arguments, &seen, &step.name, declared)
            {
                c.problem(format!("{step_path}.arguments"), message);
            }
            let Some(tool) = c.tool(tools, format!("{step_path}.tool"), &step.tool) else {
                continue;
            };
            let timeout = c.duration(
                format!("{step_path}.approval_timeout"),
                step.approval_timeout.as_deref(),
                approval_timeout,
            );
            let gate = step.approval.then(|| ApprovalGate {
                id: format!("{name}.{}", step.name).into(),
                timeout,
                four_eyes: step.four_eyes,
            });
            steps.push(Step {
                name: step.name.clone(),
                tool,
                arguments: step.arguments.clone(),
                gate,
            });
        }
        // A broken rule (a condition that does not parse, say) is reported once, where it is:
        // running the steps past it would only add follow-on "breaks rule" problems.
        if !c.has_problem_under("rules") {
            simulate(c, &path, &steps, policies);
        }
        let allowed = AllowList {
            source: format!("template {name}"),
            tools: steps.iter().map(|s| s.tool.clone()).collect(),
        };
        let template = Template {
            name: name.clone(),
            description: template.description.clone(),
            inputs,
            steps,
            allowed,
        };
        templates.insert(name.clone(), Arc::new(template));
    }
    templates
}

/// Checks a template's declared inputs: known types, defaults of the declared type.
fn check_inputs(
    c: &mut Checker,
    path: &str,
    raw: &BTreeMap<String, super::raw::RawInput>,
) -> Vec<crate::template::Input> {
    let mut inputs = Vec::new();
    for (name, input) in raw {
        let input_path = format!("{path}.inputs.{name}");
        if !valid_name(name) {
            c.problem(
                &input_path,
                "an input name uses letters, digits, '_', '-' and '.' only",
            );
        }
        let Some(kind) = crate::template::InputType::parse(&input.kind) else {
            c.problem(
                format!("{input_path}.type"),
                format!(
                    "unknown type {:?}; use string, number, integer, boolean, array or object",
                    input.kind
                ),
            );
            continue;
        };
        for (field, value) in [("default", &input.default), ("example", &input.example)] {
            if let Some(value) = value
                && !kind.accepts(value)
            {
                c.problem(
                    format!("{input_path}.{field}"),
                    format!("is not of the input's type, {}", kind.as_str()),
                );
            }
        }
        inputs.push(crate::template::Input {
            name: name.clone(),
            kind,
            description: input.description.clone(),
            required: input.default.is_none() && !input.optional,
            default: input.default.clone(),
            example: input.example.clone(),
        });
    }
    inputs
}

/// Runs a template's steps through the policy engine, each succeeding, with nothing else running: a step
/// an ordering rule would deny can never run, so the template is broken.
fn simulate(c: &mut Checker, path: &str, steps: &[Step], policies: &PolicySet) {
    let mut history = WorkflowHistory::default();
    let running = RunningCalls::default();
    let buckets = Buckets::default();
    let rates = RateState {
        global: &buckets,
        workflow: &buckets,
    };
    for (i, step) in steps.iter().enumerate() {
        let call = CallRequest {
            workflow_id: "check",
            tool: &step.tool,
            approval_granted: true,
            ..CallRequest::default()
        };
        if let Decision::Deny { violations } =
            policy::decide(policies, &history, &running, rates, &call)
        {
            for v in violations {
                c.problem(
                    format!("{path}.steps[{i}]"),
                    format!(
                        "step {:?} breaks rule {:?}: {} ({})",
                        step.name, v.rule_id, v.message, v.unblock_hint
                    ),
                );
            }
        }
        history.record(&step.tool, true);
        let origin = policy::LabelOrigin {
            call_id: format!("step {}", step.name),
            tool: step.tool.to_string(),
            at_ms: 0,
            workflow_id: None,
        };
        history
            .labels
            .bring(policies.labels_of(&step.tool), &origin);
    }
}
