//! `demo`: the scenarios of SPEC section 7, narrated, against the running daemons.
//!
//! Each scenario states what it expects (a call allowed, a tool failure, a denial by a rule of a given
//! kind, a gate) and checks it; a denial that is expected is a success. Exit 0 when every scenario
//! behaved as expected. Nothing here is faked: every call goes through the orchestrator.

use crate::cli::{DemoArgs, Global, Scenario};
use crate::client::{CliError, Client};
use crate::control::{Called, announce_gate, call_tool, start_ad_hoc};
use crate::output::{Out, clip};
use crate::run::{RunEnd, find_template, follow_run, start_run};
use crate::watch::Follower;
use anyhow::{anyhow, bail};
use conductor_proto::v1 as pb;
use serde_json::{Value, json};

mod flow;

/// What a call in a scenario should do.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Succeed,
    ToolFailure,
    Denied(&'static str),
    /// A gated call a person decides (`demo approval --manual`): approved it runs, denied it does
    /// not; both are valid outcomes.
    Decided,
}

impl Expect {
    /// What the scenario expected, in words (never the variant's name).
    fn words(self) -> String {
        match self {
            Expect::Succeed => "the call to succeed".to_owned(),
            Expect::ToolFailure => "the tool to refuse the call".to_owned(),
            Expect::Denied(kind) => format!("a denial by a {kind} rule"),
            Expect::Decided => "a person's decision".to_owned(),
        }
    }
}

struct Demo<'a> {
    out: Out,
    client: Client,
    global: &'a Global,
    manual: bool,
    /// The ad-hoc workflows the running scenario started: they end with it ("Active Workflows: 13"
    /// after a few demos otherwise).
    started: std::sync::Mutex<Vec<String>>,
}

pub async fn demo(global: &Global, args: DemoArgs) -> anyhow::Result<()> {
    let out = Out {
        json: false,
        ..Out::new(global)
    };
    let client = Client::connect(global).await?;
    let demo = Demo {
        out,
        client,
        global,
        manual: args.manual,
        started: std::sync::Mutex::default(),
    };
    let scenarios = match args.scenario {
        Some(one) => vec![one],
        None => vec![
            Scenario::Success,
            Scenario::Dependency,
            Scenario::Violation,
            Scenario::Approval,
            Scenario::Templates,
            Scenario::Flow,
        ],
    };
    outln!(
        "Conductorio demo against {} (follow along live with `conductorctl watch` in another terminal)",
        demo.client.url
    );
    let mut failed = Vec::new();
    for (i, scenario) in scenarios.iter().enumerate() {
        let title = match scenario {
            Scenario::Success => "Successful workflow: validate → process → backup → notify",
            Scenario::Dependency => {
                "Dependency enforcement: an out-of-order call is blocked, then done right"
            }
            Scenario::Violation => {
                "Policy violations: a conditional rule after a failed validation, and a parallel restriction"
            }
            Scenario::Approval => "Approval: a gated call waits for a person's decision",
            Scenario::Templates => "Templates and live monitoring",
            Scenario::Flow => {
                "Data flow and arguments: private + untrusted data gates egress; a large order needs approval"
            }
        };
        outln!(
            "\n{} {}",
            demo.out.bold(&format!("── {}/{} ", i + 1, scenarios.len())),
            demo.out.bold(title)
        );
        let result = match scenario {
            Scenario::Success => demo.success().await,
            Scenario::Dependency => demo.dependency().await,
            Scenario::Violation => demo.violation().await,
            Scenario::Approval => demo.approval().await,
            Scenario::Templates => demo.templates().await,
            Scenario::Flow => demo.flow().await,
        };
        demo.end_started().await;
        match result {
            Ok(()) => outln!("{} scenario behaved as expected", demo.out.ok("✔")),
            Err(e) => {
                if let Some(CliError::Unreachable { .. }) = e.downcast_ref::<CliError>() {
                    return Err(e);
                }
                outln!(
                    "{} scenario did not behave as expected: {e:#}",
                    demo.out.bad("✘")
                );
                failed.push(format!("{scenario:?}"));
            }
        }
    }
    outln!();
    if failed.is_empty() {
        outln!(
            "{} all {} scenario(s) behaved as expected",
            demo.out.ok("demo passed:"),
            scenarios.len()
        );
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "demo: {} scenario(s) did not behave as expected: {}",
            failed.len(),
            failed.join(", ")
        ))
        .into())
    }
}

fn customers() -> Value {
    json!([
        {"id": "c-1001", "name": "Ada Lovelace", "email": "Ada@Example.com", "country": "UK"},
        {"id": "c-1002", "name": "Grace Hopper", "email": "grace@example.com", "country": "US"},
        {"id": "c-1003", "name": "Ada  Lovelace", "email": "ada@example.com", "country": "UK"}
    ])
}

fn invalid_customers() -> Value {
    json!([{"id": "c-2002", "name": "", "email": "not-an-email"}])
}

impl Demo<'_> {
    fn say(&self, text: &str) {
        outln!("  {}", self.out.dim(text));
    }

    /// Calls a tool in `workflow`, narrates the decision, and checks it against `expect`.
    async fn call(
        &self,
        workflow: &str,
        tool: &str,
        args: Value,
        expect: Expect,
    ) -> anyhow::Result<Value> {
        outln!(
            "  → {} {}",
            self.out.bold(tool),
            clip(&args.to_string(), 90)
        );
        let out = self.out;
        let called = call_tool(
            &self.client,
            workflow,
            tool,
            &args,
            !self.manual,
            &mut |approval| {
                announce_gate(&out, approval);
                if !self.manual {
                    outln!(
                        "    (the demo approves it itself; run with --manual to decide it yourself)"
                    );
                }
            },
        )
        .await?;
        for line in called.describe(&self.out, tool).lines() {
            outln!("    {line}");
        }
        match (&called, expect) {
            (Called::Succeeded { result, .. }, Expect::Succeed | Expect::Decided) => {
                Ok(result.clone())
            }
            (Called::Denied { .. }, Expect::Decided) => {
                self.say("expected: a person denied it, so the call did not run (a valid outcome: the gate did its job)");
                Ok(Value::Null)
            }
            (Called::ToolFailed { .. }, Expect::ToolFailure) => Ok(Value::Null),
            (Called::Denied { decision, .. }, Expect::Denied(kind))
                if decision.violations.iter().any(|v| v.rule_kind == kind) =>
            {
                self.say(&format!("expected: blocked by a {kind} rule"));
                Ok(Value::Null)
            }
            (other, expected) => bail!(
                "{tool}: expected {}, got {}",
                expected.words(),
                other.describe(&Out::plain(), tool)
            ),
        }
    }

    async fn workflow(&self) -> anyhow::Result<String> {
        let id = self.start_ad_hoc().await?;
        self.say(&format!("ad-hoc workflow {id}"));
        Ok(id)
    }

    /// Starts an ad-hoc workflow that ends with the scenario.
    async fn start_ad_hoc(&self) -> anyhow::Result<String> {
        let id = start_ad_hoc(&self.client).await?.id;
        if let Ok(mut started) = self.started.lock() {
            started.push(id.clone());
        }
        Ok(id)
    }

    /// Ends the ad-hoc workflows the scenario started, whatever its outcome.
    async fn end_started(&self) {
        let started = self
            .started
            .lock()
            .map(|mut started| std::mem::take(&mut *started))
            .unwrap_or_default();
        for workflow_id in started {
            let request = pb::EndWorkflowRequest {
                workflow_id,
                reason: "its demo scenario ended (conductorctl demo)".into(),
            };
            // Already finished (cancelled, failed) is fine: the point is that none stays open.
            let _ = self.client.rpc().end_workflow(request).await;
        }
    }

    /// validate → process, returning the processed records.
    async fn prepare(&self, workflow: &str, records: Value) -> anyhow::Result<Value> {
        let valid = self
            .call(
                workflow,
                "validate_data",
                json!({"records": records, "schema": "customer"}),
                Expect::Succeed,
            )
            .await?;
        let processed = self
            .call(
                workflow,
                "process_data",
                json!({"records": valid["records"], "dedupe_by": "email"}),
                Expect::Succeed,
            )
            .await?;
        Ok(processed["records"].clone())
    }

    async fn success(&self) -> anyhow::Result<()> {
        let wf = self.workflow().await?;
        let records = self.prepare(&wf, customers()).await?;
        let backup = self
            .call(
                &wf,
                "create_backup",
                json!({"name": format!("demo-{wf}"), "data": records, "overwrite": true}),
                Expect::Succeed,
            )
            .await?;
        let body = format!(
            "Backed up {} customer(s) as {} (sha256 {})",
            records.as_array().map_or(0, Vec::len),
            backup["name"],
            backup["sha256"]
        );
        self.call(
            &wf,
            "send_notification",
            json!({"channel": "log", "recipient": "ops", "subject": "Demo backup", "body": body}),
            Expect::Succeed,
        )
        .await?;
        Ok(())
    }

    async fn dependency(&self) -> anyhow::Result<()> {
        let wf = self.workflow().await?;
        self.say("the agent skips validation and processes the records straight away:");
        self.call(
            &wf,
            "process_data",
            json!({"records": customers(), "dedupe_by": "email"}),
            Expect::Denied("sequence"),
        )
        .await?;
        self.say("the agent follows the hint: validate first, then process:");
        self.prepare(&wf, customers()).await?;
        Ok(())
    }

    async fn violation(&self) -> anyhow::Result<()> {
        let wf = self.workflow().await?;
        self.say("validation finds bad records (a real failure of the tool):");
        self.call(
            &wf,
            "validate_data",
            json!({"records": invalid_customers(), "schema": "customer"}),
            Expect::ToolFailure,
        )
        .await?;
        self.say("processing may follow any finished validation (sequence rule):");
        self.call(
            &wf,
            "process_data",
            json!({"records": invalid_customers()}),
            Expect::Succeed,
        )
        .await?;
        self.say("but a backup needs a *successful* validation (conditional rule):");
        self.call(
            &wf,
            "create_backup",
            json!({"name": format!("demo-{wf}"), "data": invalid_customers()}),
            Expect::Denied("conditional"),
        )
        .await?;
        self.parallel().await
    }

    /// Several workflows back up at the same moment; the exclusive group lets one writer run at a time.
    async fn parallel(&self) -> anyhow::Result<()> {
        const WRITERS: usize = 4;
        self.say(&format!("parallel restriction: {WRITERS} workflows call create_backup at the same moment (rule: one backup writer at a time)"));
        let big: Vec<Value> = (0..2000).map(|i| json!({"id": format!("c-{i}"), "name": format!("Customer {i}"), "email": format!("c{i}@example.com")})).collect();
        let mut workflows = Vec::new();
        for _ in 0..WRITERS {
            let wf = self.start_ad_hoc().await?;
            for (tool, args) in [
                (
                    "validate_data",
                    json!({"records": [customers()[1]], "schema": "customer"}),
                ),
                ("process_data", json!({"records": [customers()[1]]})),
            ] {
                if !matches!(
                    call_tool(&self.client, &wf, tool, &args, false, &mut |_| {}).await?,
                    Called::Succeeded { .. }
                ) {
                    bail!("preparing {wf}: {tool} did not succeed");
                }
            }
            workflows.push(wf);
        }
        let calls = workflows.iter().map(|wf| {
            let args = json!({"name": format!("demo-{wf}"), "data": big, "overwrite": true});
            let client = self.client.clone();
            let wf = wf.clone();
            async move {
                (
                    wf.clone(),
                    call_tool(&client, &wf, "create_backup", &args, false, &mut |_| {}).await,
                )
            }
        });
        let (mut ran, mut blocked) = (0, 0);
        for (wf, result) in futures::future::join_all(calls).await {
            match result? {
                Called::Succeeded { .. } => {
                    ran += 1;
                    outln!("    {wf}: create_backup {}", self.out.ok("ran"));
                }
                Called::Denied { decision, .. }
                    if decision
                        .violations
                        .iter()
                        .any(|v| v.rule_kind == "exclusive") =>
                {
                    blocked += 1;
                    outln!(
                        "    {wf}: create_backup {}: {}",
                        self.out.bad("DENIED"),
                        crate::present::violations(&decision).join("; ")
                    );
                }
                other => bail!(
                    "{wf}: create_backup: {}",
                    other.describe(&Out::plain(), "create_backup")
                ),
            }
        }
        self.say(&format!(
            "{ran} ran, {blocked} refused because another backup was being written"
        ));
        if ran == 0 {
            bail!("no backup ran at all");
        }
        Ok(())
    }

    /// A new workflow with a snapshot of valid customers backed up under `prefix-<workflow>`: its id
    /// and the snapshot's name.
    async fn with_snapshot(&self, prefix: &str) -> anyhow::Result<(String, String)> {
        let wf = self.workflow().await?;
        let records = self.prepare(&wf, customers()).await?;
        let name = format!("{prefix}-{wf}");
        self.call(
            &wf,
            "create_backup",
            json!({"name": name, "data": records, "overwrite": true}),
            Expect::Succeed,
        )
        .await?;
        Ok((wf, name))
    }

    async fn approval(&self) -> anyhow::Result<()> {
        let (wf, name) = self.with_snapshot("demo").await?;
        self.say("restoring a snapshot needs a person's approval (rule restore-needs-approval); the call waits:");
        if self.manual {
            self.say("waiting for your decision: run the `conductorctl approve ...` shown below in another terminal");
        }
        let restored = self
            .call(
                &wf,
                "restore_backup",
                json!({"name": name}),
                if self.manual {
                    Expect::Decided
                } else {
                    Expect::Succeed
                },
            )
            .await?;
        if restored.is_null() {
            self.say(
                "denied: nothing was restored, and the audit log records who denied it and why",
            );
        } else {
            self.say(&format!(
                "restored {} record(s) after the approval",
                restored["data"].as_array().map_or(0, Vec::len)
            ));
        }
        Ok(())
    }

    async fn templates(&self) -> anyhow::Result<()> {
        let orders = json!({"orders": [
            {"id": "o-1", "customer_id": "c-1001", "amount": 120.5},
            {"id": "o-2", "customer_id": "c-1002", "amount": 80},
            {"id": "o-3", "customer_id": "c-1001", "amount": 19.5}
        ]});
        self.run_template("order_summary", orders).await?;
        let batch = format!("demo-onboarding-{}", crate::output::now_ms());
        let onboarding = json!({"batch": batch, "welcome_list": "new-customers@example.com", "customers": customers()});
        self.run_template("customer_onboarding", onboarding).await
    }

    async fn run_template(&self, name: &str, input: Value) -> anyhow::Result<()> {
        let template = find_template(&self.client, name).await?;
        self.say(&format!("conductorctl run {name}: the orchestrator drives the steps; the progress comes from Watch"));
        let (started, last_seq) = start_run(&self.client, name, &input).await?;
        let mut follower = Follower::start(
            &self.client,
            self.global,
            Some(started.id.clone()),
            Some(last_seq + 1),
        )
        .await?;
        let approver = (!self.manual).then_some(&self.client);
        match follow_run(&self.out, &template, &started.id, &mut follower, approver).await? {
            RunEnd::Completed => Ok(()),
            RunEnd::Failed(reason) => {
                Err(anyhow!("template {name}: workflow {} {reason}", started.id))
            }
        }
    }
}
