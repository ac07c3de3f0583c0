//! What can be known of a condition's types before any call: a comparison whose two sides plainly
//! have kinds that never compare (`size(args.items) > "3"`, `caller == 1`), a number written as a
//! string and ordered (`args.amount > "1000"`), and a field of `args` ordered against a number in
//! one place and used as a string in another (`args.amount > 1000 && args.amount < "x"`).
//!
//! There is no schema of a call's arguments here (tools describe theirs at run time), so a field of
//! `args` has a kind only where the condition itself gives it one; `args.amount > "x"` alone may be
//! meant for a string field and is left to the call, where a comparison that fails refuses the call
//! (never an allow). Equality gives a field no kind: `args.limit > 10 || args.limit == "none"` is a
//! field that holds either.

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use std::collections::BTreeMap;

/// The kinds of CEL values a comparison cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    String,
    Bool,
    Null,
    Bytes,
    List,
    Map,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
            Kind::Bytes => "bytes",
            Kind::List => "a list",
            Kind::Map => "a map",
        }
    }
}

const ORDERING: [&str; 4] = ["_<_", "_<=_", "_>_", "_>=_"];
const EQUALITY: [&str; 2] = ["_==_", "_!=_"];
const ARITHMETIC: [&str; 4] = ["_-_", "_*_", "_/_", "_%_"];

/// The first comparison in `expr` that cannot hold for any call, as a message for the rule's
/// `when`; `None` when there is none to be seen before a call.
pub(super) fn mismatch(expr: &IdedExpr) -> Option<String> {
    let mut evidence = Evidence::default();
    visit(expr, &mut |e| evidence.gather(e));
    if let Some(problem) = evidence.conflict() {
        return Some(problem);
    }
    let mut problem = None;
    visit(expr, &mut |e| {
        if problem.is_none() {
            problem = compared(e);
        }
    });
    problem
}

/// What the condition says of the kinds of `args` fields: each ordering of a field against a value
/// of known kind, and each string method called on it.
#[derive(Default)]
struct Evidence {
    fields: BTreeMap<String, Vec<(Kind, String)>>,
}

impl Evidence {
    fn gather(&mut self, expr: &IdedExpr) {
        let Expr::Call(call) = &expr.expr else {
            return;
        };
        let name = call.func_name.as_str();
        if ORDERING.contains(&name) {
            if let [left, right] = call.args.as_slice() {
                for (field, other) in [(left, right), (right, left)] {
                    if let (Some(path), Some(kind)) = (args_path(field), known(other)) {
                        let how = format!("compared with {} ({})", show(other), kind.describe());
                        self.fields.entry(path).or_default().push((kind, how));
                    }
                }
            }
        } else if matches!(name, "startsWith" | "endsWith" | "matches")
            && let Some(path) = call.target.as_deref().and_then(args_path)
        {
            let how = format!("used as a string (.{name}())");
            self.fields
                .entry(path)
                .or_default()
                .push((Kind::String, how));
        }
    }

    /// A field the condition uses as two kinds that never compare.
    fn conflict(&self) -> Option<String> {
        for (path, uses) in &self.fields {
            let Some((first, how)) = uses.first() else {
                continue;
            };
            if let Some((other, other_how)) = uses.iter().find(|(kind, _)| kind != first) {
                return Some(format!(
                    "uses {path} as {} ({how}) and as {} ({other_how}); one of the two fails or \
                     never holds on every call: compare it with values of one kind",
                    first.describe(),
                    other.describe()
                ));
            }
        }
        None
    }
}

/// A comparison or arithmetic whose two sides have kinds that never compare.
fn compared(expr: &IdedExpr) -> Option<String> {
    let Expr::Call(call) = &expr.expr else {
        return None;
    };
    let name = call.func_name.as_str();
    let [left, right] = call.args.as_slice() else {
        return None;
    };
    let ordering = ORDERING.contains(&name);
    if !(ordering || EQUALITY.contains(&name) || ARITHMETIC.contains(&name)) {
        return None;
    }
    // A number written in quotes, ordered against anything: wrong whatever the field holds (a
    // number fails to compare with it; a string compares character by character, "9" > "10").
    if ordering {
        for (side, other) in [(left, right), (right, left)] {
            if let Some(text) = string_literal(side)
                && text.trim().parse::<f64>().is_ok()
                && text.contains(|c: char| c.is_ascii_digit())
                && known(other) != Some(Kind::String)
            {
                return Some(format!(
                    "compares {} with the string {} in `{}`: write the number without quotes \
                     ({}), since a number never compares with a string (to compare strings \
                     character by character, write string({}))",
                    show(other),
                    show(side),
                    operator(name),
                    text.trim(),
                    show(other)
                ));
            }
        }
    }
    // `-`, `*`, `/` and `%` take numbers only (`+` also joins strings and lists).
    if ARITHMETIC.contains(&name)
        && let Some((side, kind)) = [left, right].into_iter().find_map(|side| {
            known(side)
                .filter(|k| *k != Kind::Number)
                .map(|k| (side, k))
        })
    {
        return Some(format!(
            "does arithmetic on {} ({}) in `{}`: it takes numbers only, so this fails on every \
             call, and a condition that fails refuses the call",
            show(side),
            kind.describe(),
            operator(name)
        ));
    }
    let (Some(a), Some(b)) = (known(left), known(right)) else {
        return None;
    };
    if a == b || (EQUALITY.contains(&name) && (a == Kind::Null || b == Kind::Null)) {
        return None;
    }
    let what = if ARITHMETIC.contains(&name) {
        "does arithmetic on"
    } else {
        "compares"
    };
    Some(format!(
        "{what} {} ({}) with {} ({}) in `{}`: {}",
        show(left),
        a.describe(),
        show(right),
        b.describe(),
        operator(name),
        if EQUALITY.contains(&name) {
            "values of different kinds are never equal, so this never holds as meant"
        } else {
            "this fails on every call, and a condition that fails refuses the call"
        }
    ))
}

/// The kind of `expr` when it is plain from the expression itself.
fn known(expr: &IdedExpr) -> Option<Kind> {
    match &expr.expr {
        Expr::Literal(literal) => Some(match literal {
            LiteralValue::Boolean(_) => Kind::Bool,
            LiteralValue::Bytes(_) => Kind::Bytes,
            LiteralValue::Double(_) | LiteralValue::Int(_) | LiteralValue::UInt(_) => Kind::Number,
            LiteralValue::Null => Kind::Null,
            LiteralValue::String(_) => Kind::String,
        }),
        Expr::List(_) => Some(Kind::List),
        Expr::Map(_) | Expr::Struct(_) => Some(Kind::Map),
        Expr::Ident(name) => match name.as_str() {
            "caller" | "tool" => Some(Kind::String),
            "workflow" => Some(Kind::Map),
            _ => None,
        },
        Expr::Select(select) if select.test => Some(Kind::Bool),
        Expr::Select(select) => match &select.operand.expr {
            Expr::Ident(base) if base == "workflow" => match select.field.as_str() {
                "labels" => Some(Kind::List),
                _ => Some(Kind::String),
            },
            _ => None,
        },
        Expr::Call(call) => match call.func_name.as_str() {
            "_-_" | "_*_" | "_/_" | "_%_" | "-_" | "size" | "int" | "uint" | "double" => {
                Some(Kind::Number)
            }
            "string" => Some(Kind::String),
            "_+_" => call.args.iter().find_map(known),
            "_<_" | "_<=_" | "_>_" | "_>=_" | "_==_" | "_!=_" | "_&&_" | "_||_" | "!_" | "@in"
            | "startsWith" | "endsWith" | "contains" | "matches" => Some(Kind::Bool),
            _ => None,
        },
        Expr::Comprehension(_) | Expr::Unspecified => None,
    }
}

/// `args.a.b` for a select chain rooted at the variable `args`.
fn args_path(expr: &IdedExpr) -> Option<String> {
    match &expr.expr {
        Expr::Ident(name) if name == "args" => Some("args".to_owned()),
        Expr::Select(select) if !select.test => {
            args_path(&select.operand).map(|base| format!("{base}.{}", select.field))
        }
        _ => None,
    }
}

/// `a.b.c` for a select chain rooted at any name (a variable, a comprehension's).
fn dotted(expr: &IdedExpr) -> Option<String> {
    match &expr.expr {
        Expr::Ident(name) => Some(name.clone()),
        Expr::Select(select) if !select.test => {
            dotted(&select.operand).map(|base| format!("{base}.{}", select.field))
        }
        _ => None,
    }
}

fn string_literal(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(text)) => Some(text.inner()),
        _ => None,
    }
}

/// An operand as the message names it.
fn show(expr: &IdedExpr) -> String {
    if let Some(text) = string_literal(expr) {
        return format!("{text:?}");
    }
    if let Some(path) = dotted(expr) {
        return path;
    }
    match &expr.expr {
        Expr::Literal(_) => "a literal".to_owned(),
        Expr::Call(call) if !call.func_name.starts_with('_') => format!("{}(..)", call.func_name),
        _ => "an expression".to_owned(),
    }
}

fn operator(name: &str) -> &str {
    name.trim_matches('_')
}

/// Calls `f` on `expr` and every expression inside it.
fn visit(expr: &IdedExpr, f: &mut impl FnMut(&IdedExpr)) {
    f(expr);
    match &expr.expr {
        Expr::Select(select) => visit(&select.operand, f),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                visit(target, f);
            }
            for arg in &call.args {
                visit(arg, f);
            }
        }
        Expr::Comprehension(comp) => {
            for part in [
                &comp.iter_range,
                &comp.accu_init,
                &comp.loop_cond,
                &comp.loop_step,
                &comp.result,
            ] {
                visit(part, f);
            }
        }
        Expr::List(list) => list.elements.iter().for_each(|e| visit(e, f)),
        Expr::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    EntryExpr::StructField(field) => visit(&field.value, f),
                    EntryExpr::MapEntry(entry) => {
                        visit(&entry.key, f);
                        visit(&entry.value, f);
                    }
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(field) = &entry.expr {
                    visit(&field.value, f);
                }
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::Condition;

    fn checked(source: &str) -> Result<(), String> {
        Condition::compile(&"r".into(), source).map(|_| ())
    }

    #[test]
    fn comparisons_of_kinds_that_never_compare_are_refused_with_what_to_change() {
        let table = [
            (
                "size(args.items) > \"3\"",
                "write the number without quotes (3)",
            ),
            (
                "args.amount > \"1000\"",
                "compares args.amount with the string \"1000\"",
            ),
            (
                "\"10\" <= args.r.amount",
                "write the number without quotes (10)",
            ),
            (
                "caller == 1",
                "compares caller (a string) with a literal (a number)",
            ),
            ("tool > 2", "in `>`"),
            ("size(args.x) != 'three'", "never equal"),
            ("args.amount * 'x' > 1", "does arithmetic on"),
            (
                "args.amount > 1000 && args.amount < 'x'",
                "uses args.amount as a number",
            ),
            (
                "args.to.endsWith('@x') || args.to > 3",
                "uses args.to as a string",
            ),
            ("args.items.exists(i, i.price > '5')", "i.price"),
        ];
        for (source, needle) in table {
            match checked(source) {
                Ok(()) => panic!("{source:?} was accepted"),
                Err(problem) => assert!(problem.contains(needle), "{source:?}: {problem}"),
            }
        }
    }

    #[test]
    fn conditions_that_a_call_could_evaluate_as_meant_are_kept() {
        for source in [
            // The shipped configuration, the README and the tests.
            "has(args.aggregate) && args.records.exists(r, has(r.amount) && r.amount > 10000)",
            "args.channel == 'webhook' && !args.recipient.startsWith('https://hooks.example.com/')",
            "args.items.exists(i, i.price > 10) && args.tags.all(t, t != 'x')",
            "has(args.items) && args.items.exists(i, i.price * 2 > 10)",
            "'private' in workflow.labels && workflow.id == 'wf'",
            "caller == 'ada' && tool == 'pay'",
            "args.priority == 'urgent' && args.amount > 1000",
            "size(args.items) > 50",
            // A field of unknown kind against a string: a string field compares as meant.
            "args.amount > 'x'",
            "args.date >= '2026-01-01' && args.date < '2027-01-01'",
            "string(args.code) > '5'",
            // A field that holds either kind, told apart by equality.
            "args.limit > 10 || args.limit == 'none'",
            "args.x == null || args.x > 3",
            "args.level > 'inf' || args.level < 'nan'",
            "args.a + 1 > 2 && 'p' + args.b == 'pq'",
        ] {
            assert_eq!(checked(source), Ok(()), "{source:?}");
        }
    }
}
