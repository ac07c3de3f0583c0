//! `demo flow`: rules that look at what a call carries and where data flows.
//!
//! An agent reads a customer snapshot back (`restore_backup`, labelled `private`) and the messages
//! in the outbox (`list_notifications`, `untrusted`: text anyone could have written), then tries to
//! send a notification out (`send_notification`, `egress`). Flow rule `no-unchecked-egress` makes it
//! wait for a person, and the request names the earlier calls that brought each label in. Then an
//! order batch is totalled: a small one runs, one with an order above 10,000 waits for approval
//! (rule `large-order-needs-approval`, a condition on the arguments).

use super::{Demo, Expect};
use crate::control::{Called, announce_gate, call_tool};
use anyhow::bail;
use serde_json::{Value, json};

impl Demo<'_> {
    pub(super) async fn flow(&self) -> anyhow::Result<()> {
        let (wf, name) = self.with_snapshot("demo-flow").await?;
        self.say("the agent reads the snapshot back: restore_backup is labelled private (and gated by restore-needs-approval)");
        self.call(
            &wf,
            "restore_backup",
            json!({"name": name}),
            Expect::Succeed,
        )
        .await?;
        self.say("it reads the outbox: list_notifications is labelled untrusted (anyone could have written it)");
        self.call(&wf, "list_notifications", json!({}), Expect::Succeed)
            .await?;
        self.say("now it tries to send data out (send_notification is labelled egress): flow rule no-unchecked-egress makes it wait, naming the calls that brought private and untrusted in");
        let why = self
            .gated_call(
                &wf,
                "send_notification",
                json!({"channel": "webhook", "recipient": "https://hooks.example.com/agent", "body": "customer summary"}),
                "no-unchecked-egress",
            )
            .await?;
        for (label, tool) in [
            ("private", "restore_backup"),
            ("untrusted", "list_notifications"),
        ] {
            if !why.contains(&format!("{label} from call")) || !why.contains(tool) {
                bail!(
                    "the approval request does not name the {tool} call that brought {label} in: {why}"
                );
            }
        }

        let orders = self.workflow().await?;
        self.say("a small order batch is validated and totalled: it runs");
        let small = json!([{"id": "o-1", "customer_id": "c-1001", "amount": 120.5}, {"id": "o-2", "customer_id": "c-1002", "amount": 80}]);
        self.total(&orders, small, None).await?;
        self.say("a batch with an order above 10,000 waits for approval: rule large-order-needs-approval looks at the amounts");
        let large = json!([{"id": "o-3", "customer_id": "c-1001", "amount": 25000}, {"id": "o-4", "customer_id": "c-1002", "amount": 40}]);
        self.total(&orders, large, Some("large-order-needs-approval"))
            .await?;
        Ok(())
    }

    /// validate → process with totals per customer; `gate`: the approval gate the total must wait at.
    async fn total(&self, wf: &str, orders: Value, gate: Option<&str>) -> anyhow::Result<()> {
        let valid = self
            .call(
                wf,
                "validate_data",
                json!({"records": orders, "schema": "order"}),
                Expect::Succeed,
            )
            .await?;
        let args = json!({"records": valid["records"], "aggregate": {"group_by": "customer_id", "sum": ["amount"]}});
        match gate {
            None => {
                self.call(wf, "process_data", args, Expect::Succeed).await?;
            }
            Some(gate) => {
                self.gated_call(wf, "process_data", args, gate).await?;
            }
        }
        Ok(())
    }

    /// A call that must wait at `gate`; the demo approves it (or a person does, with `--manual`).
    /// Returns why the request says it waits.
    async fn gated_call(
        &self,
        wf: &str,
        tool: &str,
        args: Value,
        gate: &str,
    ) -> anyhow::Result<String> {
        outln!(
            "  → {} {}",
            self.out.bold(tool),
            crate::output::clip(&args.to_string(), 90)
        );
        let out = self.out;
        let mut seen: Option<(String, String)> = None;
        let called = call_tool(
            &self.client,
            wf,
            tool,
            &args,
            !self.manual,
            &mut |approval| {
                announce_gate(&out, approval);
                seen = Some((approval.gate.clone(), approval.why.clone()));
            },
        )
        .await?;
        for line in called.describe(&self.out, tool).lines() {
            outln!("    {line}");
        }
        let Some((asked, why)) = seen else {
            bail!("{tool}: expected to wait at gate {gate}, but it did not wait");
        };
        if asked != gate {
            bail!("{tool}: expected gate {gate}, it waited at {asked}");
        }
        if !matches!(called, Called::Succeeded { .. }) {
            bail!("{tool}: expected it to run once approved");
        }
        self.say(&format!(
            "expected: it waited at {gate} and ran once approved"
        ));
        Ok(why)
    }
}
