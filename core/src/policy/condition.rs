//! Conditions of rules (`when`): CEL programs over a call's arguments, its caller and its workflow.
//!
//! A condition is compiled once, when the configuration is loaded, and checked there for what can be
//! known without a call: that it parses, names only the variables a decision binds, is not plainly
//! something other than a boolean, and compares no values of kinds that never compare (`types`).
//! At decision time it is evaluated only for the rules of the tool being called, against a context
//! built once per decision and only when some rule of the tool has a condition. An evaluation that
//! fails (a missing argument, a type mismatch, a non-boolean result) is never read as "false": the
//! engine turns it into a denial naming the rule.
//!
//! Pure: no I/O, no clock.

use super::{LabelSet, Name};

mod types;
use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::{Context, Env, Program};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, LazyLock};

/// The variables a condition may use.
pub const VARIABLES: [&str; 4] = ["args", "caller", "tool", "workflow"];

/// The fields of `workflow`.
pub const WORKFLOW_FIELDS: [&str; 3] = ["id", "template", "labels"];

/// The standard library, built once: a context per decision shares it instead of building its own.
static STDLIB: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A rule's `when`, compiled.
#[derive(Debug)]
pub struct Condition {
    /// The rule the condition belongs to (named in denials and in the audit record).
    pub rule_id: Name,
    /// The expression as written, for messages and listings.
    pub source: String,
    program: Program,
    /// What the condition reads, so that a decision binds only that (converting a call's whole
    /// arguments to CEL values costs more than evaluating a condition).
    needs: Needs,
}

/// The parts of a decision's facts a condition reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Needs {
    /// `args` as a whole (anything but `args.<field>` reads it whole).
    all_args: bool,
    /// The top-level fields of `args` it reads as `args.<field>`.
    args: std::collections::BTreeSet<String>,
    workflow: bool,
}

impl Needs {
    fn covers(&self, other: &Needs) -> bool {
        (self.all_args || (!other.all_args && other.args.is_subset(&self.args)))
            && (self.workflow || !other.workflow)
    }

    /// Records what `expr` reads; `bound` are the comprehension variables in scope.
    fn read(&mut self, expr: &IdedExpr, bound: &mut Vec<String>) {
        let free = |name: &str, bound: &[String]| !bound.iter().any(|b| b == name);
        match &expr.expr {
            Expr::Ident(name) if free(name, bound) => match name.as_str() {
                "args" => self.all_args = true,
                "workflow" => self.workflow = true,
                _ => {}
            },
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
            Expr::Select(select) => match &select.operand.expr {
                Expr::Ident(base) if base == "args" && free(base, bound) => {
                    self.args.insert(select.field.clone());
                }
                _ => self.read(&select.operand, bound),
            },
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.read(target, bound);
                }
                for arg in &call.args {
                    self.read(arg, bound);
                }
            }
            Expr::Comprehension(comp) => {
                self.read(&comp.iter_range, bound);
                self.read(&comp.accu_init, bound);
                let depth = bound.len();
                bound.push(comp.iter_var.clone());
                bound.extend(comp.iter_var2.clone());
                bound.push(comp.accu_var.clone());
                self.read(&comp.loop_cond, bound);
                self.read(&comp.loop_step, bound);
                self.read(&comp.result, bound);
                bound.truncate(depth);
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.read(element, bound);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::StructField(field) => self.read(&field.value, bound),
                        EntryExpr::MapEntry(entry) => {
                            self.read(&entry.key, bound);
                            self.read(&entry.value, bound);
                        }
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(field) = &entry.expr {
                        self.read(&field.value, bound);
                    }
                }
            }
        }
    }
}

impl Condition {
    /// Compiles `source` and checks what can be checked before any call: syntax, the names it uses
    /// and a result that is plainly not a boolean. The error says what to change.
    pub fn compile(rule_id: &Name, source: &str) -> Result<Condition, String> {
        if source.trim().is_empty() {
            return Err("the condition is empty; write a CEL expression such as \
                        `args.amount > 1000`, or leave `when` out"
                .into());
        }
        let program = STDLIB
            .compile(source)
            .map_err(|e| format!("does not parse as CEL: {}", one_line(&e.to_string())))?;
        let mut bound = Vec::new();
        let mut problems = Vec::new();
        check_names(program.expression(), &mut bound, &mut problems);
        if let Some(problem) = problems.into_iter().next() {
            return Err(problem);
        }
        if let Some(kind) = not_boolean(program.expression()) {
            return Err(format!(
                "returns {kind}, not a boolean; a condition must be true or false \
                 (e.g. `args.amount > 1000`)"
            ));
        }
        if let Some(problem) = types::mismatch(program.expression()) {
            return Err(problem);
        }
        let mut needs = Needs::default();
        needs.read(program.expression(), &mut Vec::new());
        Ok(Condition {
            rule_id: rule_id.clone(),
            source: source.to_owned(),
            program,
            needs,
        })
    }

    /// Evaluates the condition against `context`: `Ok(true)` when the rule applies.
    fn evaluate(&self, context: &Context<'_, '_>) -> Result<bool, String> {
        match self.program.execute(context) {
            Ok(cel::Value::Bool(held)) => Ok(held),
            Ok(other) => Err(format!(
                "it returned {} instead of true or false",
                kind_of(&other)
            )),
            Err(e) => Err(one_line(&e.to_string())),
        }
    }
}

/// What a decision's conditions see.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The call's arguments; `None` when they are not known yet (the outlook of a next call).
    pub arguments: Option<&'a serde_json::Value>,
    /// The caller's identity (the name its credential proves).
    pub caller: &'a str,
    pub tool: &'a str,
    pub workflow_id: &'a str,
    pub template: Option<&'a str>,
}

/// A condition's result in one decision, as the audit record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionResult {
    pub rule_id: String,
    /// `true`: the rule applied; `false`: it did not; absent: evaluation failed (see `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The conditions of one decision: the context built at most once, each condition evaluated at
/// most once, every result kept for the record.
pub(super) struct Evaluator<'a> {
    facts: Facts<'a>,
    labels: &'a LabelSet,
    /// The bound facts, and what of them is bound.
    context: Option<(Context<'static, 'static>, Needs)>,
    pub(super) results: Vec<ConditionResult>,
}

/// What a rule's condition means for one decision.
pub(super) enum Held {
    Yes,
    No,
    /// The arguments are not known (an outlook): the rule may or may not apply.
    Unknown,
    /// The evaluation failed: the call is refused, for this reason.
    Failed(String),
}

impl<'a> Evaluator<'a> {
    pub(super) fn new(facts: Facts<'a>, labels: &'a LabelSet) -> Self {
        Evaluator {
            facts,
            labels,
            context: None,
            results: Vec::new(),
        }
    }

    /// Whether the rule whose condition is `condition` applies to this call (no condition: it does).
    pub(super) fn holds(&mut self, condition: Option<&Condition>) -> Held {
        let Some(condition) = condition else {
            return Held::Yes;
        };
        let Some(arguments) = self.facts.arguments else {
            return Held::Unknown;
        };
        if let Some(done) = self
            .results
            .iter()
            .find(|r| r.rule_id == *condition.rule_id)
        {
            return match (done.value, &done.error) {
                (Some(true), _) => Held::Yes,
                (Some(false), _) => Held::No,
                (None, error) => Held::Failed(error.clone().unwrap_or_default()),
            };
        }
        // Bound for the first condition with what it reads; a later one that reads more gets
        // everything bound, so a decision binds at most twice.
        if !self
            .context
            .as_ref()
            .is_some_and(|(_, bound)| bound.covers(&condition.needs))
        {
            let needs = match self.context.take() {
                None => condition.needs.clone(),
                Some(_) => Needs {
                    all_args: true,
                    args: Default::default(),
                    workflow: true,
                },
            };
            let context = build_context(self.facts, arguments, self.labels, &needs);
            self.context = Some((context, needs));
        }
        let Some((context, _)) = &self.context else {
            unreachable!("bound just above");
        };
        let outcome = condition.evaluate(context);
        let (value, error, held) = match outcome {
            Ok(true) => (Some(true), None, Held::Yes),
            Ok(false) => (Some(false), None, Held::No),
            Err(e) => (None, Some(e.clone()), Held::Failed(e)),
        };
        self.results.push(ConditionResult {
            rule_id: condition.rule_id.to_string(),
            value,
            error,
        });
        held
    }
}

fn build_context(
    facts: Facts<'_>,
    arguments: &serde_json::Value,
    labels: &LabelSet,
    needs: &Needs,
) -> Context<'static, 'static> {
    let mut context = Context::with_env(STDLIB.clone());
    // A JSON value always converts (objects have string keys); `null` stands in should it not.
    // Only the fields read are converted: a field the call lacks is missing either way.
    let args = match arguments {
        serde_json::Value::Object(fields) if !needs.all_args => {
            let read: serde_json::Map<String, serde_json::Value> = needs
                .args
                .iter()
                .filter_map(|name| fields.get(name).map(|v| (name.clone(), v.clone())))
                .collect();
            cel::to_value(read)
        }
        whole => cel::to_value(whole),
    }
    .unwrap_or(cel::Value::Null);
    context.add_variable_from_value("args", args);
    context.add_variable_from_value("caller", facts.caller.to_owned());
    context.add_variable_from_value("tool", facts.tool.to_owned());
    if !needs.workflow {
        return context;
    }
    let mut workflow = std::collections::HashMap::new();
    workflow.insert(
        "id".to_owned(),
        cel::Value::from(facts.workflow_id.to_owned()),
    );
    workflow.insert(
        "template".to_owned(),
        cel::Value::from(facts.template.unwrap_or_default().to_owned()),
    );
    let labels: Vec<cel::Value> = labels
        .names()
        .iter()
        .map(|l| cel::Value::from(l.to_string()))
        .collect();
    workflow.insert("labels".to_owned(), cel::Value::from(labels));
    context.add_variable_from_value("workflow", workflow);
    context
}

/// Reports names the decision does not bind: unknown variables, unknown fields of `workflow`, and
/// fields of the string variables. Comprehension variables (`args.to.all(r, ...)`) are bound inside
/// their comprehension.
fn check_names(expr: &IdedExpr, bound: &mut Vec<String>, problems: &mut Vec<String>) {
    match &expr.expr {
        Expr::Ident(name) => {
            if !name.starts_with('@')
                && !bound.iter().any(|b| b == name)
                && !VARIABLES.contains(&name.as_str())
            {
                problems.push(format!(
                    "unknown name `{name}`; a condition can use {}",
                    VARIABLES.join(", ")
                ));
            }
        }
        Expr::Select(select) => {
            if let Expr::Ident(base) = &select.operand.expr
                && !bound.iter().any(|b| b == base)
            {
                match base.as_str() {
                    "workflow" if !WORKFLOW_FIELDS.contains(&select.field.as_str()) => problems
                        .push(format!(
                            "workflow has no field `{}`; it has {}",
                            select.field,
                            WORKFLOW_FIELDS.join(", ")
                        )),
                    "caller" | "tool" => problems.push(format!(
                        "{base} is a string and has no field `{}`",
                        select.field
                    )),
                    _ => {}
                }
            }
            check_names(&select.operand, bound, problems);
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                check_names(target, bound, problems);
            }
            for arg in &call.args {
                check_names(arg, bound, problems);
            }
        }
        Expr::Comprehension(comp) => {
            check_names(&comp.iter_range, bound, problems);
            check_names(&comp.accu_init, bound, problems);
            let depth = bound.len();
            bound.push(comp.iter_var.clone());
            bound.extend(comp.iter_var2.clone());
            bound.push(comp.accu_var.clone());
            check_names(&comp.loop_cond, bound, problems);
            check_names(&comp.loop_step, bound, problems);
            check_names(&comp.result, bound, problems);
            bound.truncate(depth);
        }
        Expr::List(list) => {
            for element in &list.elements {
                check_names(element, bound, problems);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    EntryExpr::StructField(field) => check_names(&field.value, bound, problems),
                    EntryExpr::MapEntry(entry) => {
                        check_names(&entry.key, bound, problems);
                        check_names(&entry.value, bound, problems);
                    }
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(field) = &entry.expr {
                    check_names(&field.value, bound, problems);
                }
            }
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// What an expression plainly returns when that is not a boolean (no type checker: the cases a
/// glance at the top of the expression settles). `None`: a boolean, or not known before a call.
fn not_boolean(expr: &IdedExpr) -> Option<&'static str> {
    match &expr.expr {
        Expr::Literal(LiteralValue::Boolean(_)) => None,
        Expr::Literal(LiteralValue::String(_)) => Some("a string"),
        Expr::Literal(LiteralValue::Bytes(_)) => Some("bytes"),
        Expr::Literal(LiteralValue::Null) => Some("null"),
        Expr::Literal(_) => Some("a number"),
        Expr::List(_) | Expr::Comprehension(_) if is_map_or_filter(expr) => Some("a list"),
        Expr::List(_) => Some("a list"),
        Expr::Map(_) | Expr::Struct(_) => Some("a map"),
        Expr::Ident(name) => match name.as_str() {
            "caller" | "tool" => Some("a string"),
            "workflow" => Some("a map"),
            _ => None,
        },
        Expr::Select(select) => match &select.operand.expr {
            Expr::Ident(base) if base == "workflow" && !select.test => {
                match select.field.as_str() {
                    "labels" => Some("a list"),
                    _ => Some("a string"),
                }
            }
            _ => None,
        },
        Expr::Call(call) => match call.func_name.as_str() {
            "_+_" | "_-_" | "_*_" | "_/_" | "_%_" | "-_" | "size" | "int" | "uint" | "double" => {
                Some("a number")
            }
            "string" => Some("a string"),
            "_?_:_" => call
                .args
                .get(1)
                .and_then(not_boolean)
                .and_then(|a| call.args.get(2).and_then(not_boolean).map(|_| a)),
            _ => None,
        },
        Expr::Comprehension(_) | Expr::Unspecified => None,
    }
}

/// `map` and `filter` macros expand to comprehensions whose result is a list.
fn is_map_or_filter(expr: &IdedExpr) -> bool {
    match &expr.expr {
        Expr::Comprehension(comp) => matches!(comp.accu_init.expr, Expr::List(_)),
        _ => false,
    }
}

fn kind_of(value: &cel::Value) -> &'static str {
    match value {
        cel::Value::Int(_) | cel::Value::UInt(_) | cel::Value::Float(_) => "a number",
        cel::Value::String(_) => "a string",
        cel::Value::List(_) => "a list",
        cel::Value::Map(_) => "a map",
        cel::Value::Null => "null",
        _ => "a value",
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiled under a rule id of its own (an evaluator remembers results by rule).
    fn compiled(source: &str) -> Condition {
        Condition::compile(&source.into(), source).expect("compiles")
    }

    #[test]
    fn a_condition_binds_only_what_it_reads() {
        let needs = |source| compiled(source).needs;
        let only = |fields: &[&str]| Needs {
            args: fields.iter().map(|f| (*f).to_owned()).collect(),
            ..Needs::default()
        };
        assert_eq!(needs("args.amount > 1"), only(&["amount"]));
        assert_eq!(
            needs("args.items.exists(i, i.price > 1) || has(args.note)"),
            only(&["items", "note"])
        );
        assert_eq!(needs("[1, 2].exists(args, args > 1)"), only(&[]));
        assert!(needs("'x' in args").all_args);
        assert!(needs("size(args) > 2").all_args);
        assert!(needs("workflow.labels.exists(l, l == 'x')").workflow);
        assert!(!needs("caller == 'a' && tool == 'b'").workflow);
    }

    #[test]
    fn later_conditions_that_read_more_see_what_they_read() {
        let arguments = serde_json::json!({ "a": 1, "b": 2 });
        let labels = LabelSet::default();
        let facts = Facts {
            arguments: Some(&arguments),
            caller: "grpc:ada",
            tool: "pay",
            workflow_id: "wf-1",
            template: None,
        };
        let mut evaluator = Evaluator::new(facts, &labels);
        let held = |evaluator: &mut Evaluator<'_>, source: &str| match evaluator
            .holds(Some(&compiled(source)))
        {
            Held::Yes => "yes".to_owned(),
            Held::No => "no".to_owned(),
            Held::Unknown => "unknown".to_owned(),
            Held::Failed(why) => format!("failed: {why}"),
        };
        assert_eq!(held(&mut evaluator, "args.a == 1"), "yes");
        assert_eq!(held(&mut evaluator, "args.b == 3"), "no");
        assert_eq!(held(&mut evaluator, "size(args) == 2"), "yes");
        assert!(held(&mut evaluator, "args.c == 1").starts_with("failed"));
        assert_eq!(
            held(
                &mut evaluator,
                "workflow.id == 'wf-1' && caller == 'grpc:ada'"
            ),
            "yes"
        );
    }
}
