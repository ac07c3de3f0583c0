//! `interactive`: a prompt to start a workflow and call tools one at a time, seeing each decision, the
//! reason and hint of a denial, and the next allowed steps.
//!
//! On a terminal it uses rustyline (editing, history); otherwise it reads plain lines from stdin and echoes
//! them, so a scripted session reads like a transcript. The next allowed tools come from the pure policy
//! engine run locally on the workflow's history, but only when the local configuration file is exactly the
//! version the orchestrator runs; otherwise the orchestrator's hints are all we show.

use crate::cli::{Global, InteractiveArgs};
use crate::client::{Answer, Client};
use crate::control::{Called, announce_gate, call_tool, start_ad_hoc};
use crate::output::Out;
use crate::status::print_workflow;
use conductor_orchestrator::config::Config;
use conductor_orchestrator::policy::{
    self, Buckets, CallRequest, Decision, Name, RateState, RunningCalls, WorkflowHistory,
};
use conductor_proto::v1 as pb;
use serde_json::Value;
use std::io::{BufRead, IsTerminal};

const HELP: &str = "commands:
  start [TEMPLATE] [INPUT-JSON]   start a workflow (ad hoc without TEMPLATE)
  call TOOL [ARGS-JSON]           call a tool in the current workflow, e.g. call validate_data {\"records\": [], \"schema\": \"order\"}
  status                          the current workflow and the next allowed steps
  history                         every call of the current workflow with its decision and duration
  tools | templates               what can be called or started
  help                            this text
  quit                            leave (the workflow stays in the orchestrator)";

/// Where lines come from: rustyline on a terminal, plain stdin otherwise.
enum LineSource {
    Editor(Box<rustyline::DefaultEditor>),
    Plain(std::io::StdinLock<'static>),
}

impl LineSource {
    fn new() -> LineSource {
        if std::io::stdin().is_terminal()
            && let Ok(editor) = rustyline::DefaultEditor::new()
        {
            return LineSource::Editor(Box::new(editor));
        }
        LineSource::Plain(std::io::stdin().lock())
    }

    /// The next line, or `None` at the end of input (Ctrl-D) or on Ctrl-C.
    fn read(&mut self, prompt: &str) -> Option<String> {
        tokio::task::block_in_place(|| match self {
            LineSource::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    Some(line)
                }
                Err(_) => None,
            },
            LineSource::Plain(stdin) => {
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(0) | Err(_) => None,
                    Ok(_) => {
                        let line = line.trim_end_matches(['\n', '\r']).to_owned();
                        println!("{prompt}{line}");
                        Some(line)
                    }
                }
            }
        })
    }
}

struct Session {
    out: Out,
    client: Client,
    workflow: Option<String>,
    templates: Vec<pb::TemplateInfo>,
    tools: Vec<String>,
    /// The orchestrator's configuration, when the local file is the same version.
    local: Option<Config>,
}

pub async fn interactive(global: &Global, args: InteractiveArgs) -> anyhow::Result<()> {
    let out = Out {
        json: false,
        ..Out::new(global)
    };
    let client = Client::connect(global).await?;
    let status = client
        .rpc()
        .status(pb::StatusRequest {})
        .await
        .answer(&client)?;
    let templates = client
        .rpc()
        .list_templates(pb::ListTemplatesRequest {})
        .await
        .answer(&client)?
        .templates;
    let tools = client
        .rpc()
        .list_tools(pb::ListToolsRequest {})
        .await
        .answer(&client)?
        .tools
        .into_iter()
        .map(|t| t.name)
        .collect();
    let local = match Config::load(&args.config) {
        Ok(config) if config.version == status.config_version => Some(config),
        Ok(_) => {
            println!(
                "(next allowed tools not shown: {} is not the configuration the orchestrator runs)",
                args.config.display()
            );
            None
        }
        Err(_) => None,
    };
    let mut session = Session {
        out,
        client,
        workflow: None,
        templates,
        tools,
        local,
    };
    println!(
        "conductorctl interactive — {} (type `help`)",
        session.client.url
    );
    let mut lines = LineSource::new();
    while let Some(line) = lines.read("conductor> ") {
        let line = line.trim();
        let (command, rest) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(c, r)| (c, r.trim()));
        let result = match command {
            "" => Ok(()),
            "help" | "?" => {
                println!("{HELP}");
                Ok(())
            }
            "quit" | "exit" | "q" => break,
            "start" => session.start(rest).await,
            "call" => session.call(rest).await,
            "status" => session.status(false).await,
            "history" => session.status(true).await,
            "tools" => {
                println!("{}", session.tools.join(", "));
                Ok(())
            }
            "templates" => {
                for t in &session.templates {
                    let steps: Vec<String> = t.steps.iter().map(|s| s.tool.clone()).collect();
                    println!("{}: {}", t.name, steps.join(" → "));
                }
                Ok(())
            }
            other => {
                println!("unknown command {other:?}; type `help`");
                Ok(())
            }
        };
        if let Err(e) = result {
            if let Some(crate::client::CliError::Unreachable { .. }) = e.downcast_ref() {
                return Err(e);
            }
            println!("{} {e:#}", session.out.bad("error:"));
        }
    }
    if let Some(id) = &session.workflow {
        println!("bye; the workflow {id} stays in the orchestrator (`conductorctl workflow {id}`)");
    }
    Ok(())
}

impl Session {
    async fn start(&mut self, rest: &str) -> anyhow::Result<()> {
        let (template, input) = rest
            .split_once(char::is_whitespace)
            .map_or((rest, "{}"), |(t, i)| (t, i.trim()));
        let (template, input) = if template.starts_with('{') {
            ("", rest)
        } else {
            (template, input)
        };
        let input: Value = serde_json::from_str(if input.is_empty() { "{}" } else { input })?;
        let request = pb::StartWorkflowRequest {
            template: template.to_owned(),
            input_json: input.to_string(),
            caller: String::new(),
        };
        let w = if template.is_empty() {
            start_ad_hoc(&self.client).await?
        } else {
            self.client
                .rpc()
                .start_workflow(request)
                .await
                .answer(&self.client)?
        };
        let what = if template.is_empty() {
            "ad-hoc workflow".to_owned()
        } else {
            format!("workflow of template {template}")
        };
        println!("started {what} {}", self.out.bold(&w.id));
        self.workflow = Some(w.id);
        self.next_steps().await
    }

    async fn call(&mut self, rest: &str) -> anyhow::Result<()> {
        let (tool, args) = rest
            .split_once(char::is_whitespace)
            .map_or((rest, "{}"), |(t, a)| (t, a.trim()));
        if tool.is_empty() {
            anyhow::bail!("write `call TOOL {{json arguments}}`");
        }
        let args: Value = serde_json::from_str(if args.is_empty() { "{}" } else { args })
            .map_err(|e| anyhow::anyhow!("the arguments are not JSON: {e}"))?;
        if self.workflow.is_none() {
            let w = start_ad_hoc(&self.client).await?;
            println!("started ad-hoc workflow {}", self.out.bold(&w.id));
            self.workflow = Some(w.id);
        }
        let workflow = self.workflow.clone().unwrap_or_default();
        let out = self.out;
        let called = call_tool(&self.client, &workflow, tool, &args, false, &mut |a| {
            announce_gate(&out, a)
        })
        .await?;
        println!("{}", called.describe(&self.out, tool));
        match &called {
            Called::Succeeded { result, .. } => println!(
                "  result: {}",
                crate::output::clip(&result.to_string(), 300)
            ),
            Called::Denied { .. } => println!("  the call did not run; the workflow goes on"),
            Called::ToolFailed { .. } => {}
        }
        self.next_steps().await
    }

    async fn status(&self, history: bool) -> anyhow::Result<()> {
        let Some(id) = &self.workflow else {
            println!("no workflow yet: `start` one (or just `call` a tool)");
            return Ok(());
        };
        let w = self
            .client
            .rpc()
            .get_workflow(pb::GetWorkflowRequest {
                workflow_id: id.clone(),
            })
            .await
            .answer(&self.client)?;
        if history {
            print_workflow(&self.out, &w);
        } else {
            println!(
                "workflow {} {} ({} call(s))",
                w.id,
                self.out.state(crate::present::workflow_state(w.state)),
                w.history.len()
            );
            self.print_next(&w);
        }
        Ok(())
    }

    async fn next_steps(&self) -> anyhow::Result<()> {
        let Some(id) = &self.workflow else {
            return Ok(());
        };
        let w = self
            .client
            .rpc()
            .get_workflow(pb::GetWorkflowRequest {
                workflow_id: id.clone(),
            })
            .await
            .answer(&self.client)?;
        self.print_next(&w);
        Ok(())
    }

    fn print_next(&self, w: &pb::WorkflowInfo) {
        if crate::present::is_finished(w.state) {
            println!(
                "  the workflow has {}; `start` another",
                crate::present::workflow_state(w.state)
            );
            return;
        }
        if !w.next_step.is_empty() {
            let tool = self
                .templates
                .iter()
                .find(|t| t.name == w.template)
                .and_then(|t| t.steps.iter().find(|s| s.name == w.next_step))
                .map(|s| s.tool.as_str());
            println!(
                "  next template step: {} ({})",
                w.next_step,
                tool.unwrap_or("?")
            );
        }
        let Some(config) = &self.local else { return };
        let (allowed, gated, blocked) = next_allowed(config, w, &self.tools);
        println!(
            "  next allowed: {}",
            if allowed.is_empty() {
                "-".to_owned()
            } else {
                allowed.join(", ")
            }
        );
        if !gated.is_empty() {
            println!("  allowed after approval: {}", gated.join(", "));
        }
        for (tool, hint) in blocked {
            println!("  blocked: {tool} — {hint}");
        }
    }
}

/// Which tools the policy engine would allow next in this workflow: a preview that does not know the calls
/// running elsewhere, rate-limit buckets or a workflow's allow-list (the orchestrator decides for real).
fn next_allowed(
    config: &Config,
    w: &pb::WorkflowInfo,
    tools: &[String],
) -> (Vec<String>, Vec<String>, Vec<(String, String)>) {
    let mut history = WorkflowHistory::default();
    for call in &w.history {
        match crate::present::outcome(call.outcome) {
            "succeeded" => history.record(&Name::from(call.tool.as_str()), true),
            "failed" | "interrupted" => history.record(&Name::from(call.tool.as_str()), false),
            _ => {}
        }
    }
    let running = RunningCalls::default();
    let buckets = Buckets::default();
    let rates = RateState {
        global: &buckets,
        workflow: &buckets,
    };
    let now_ms = crate::output::now_ms();
    let (mut allowed, mut gated, mut blocked) = (Vec::new(), Vec::new(), Vec::new());
    for tool in tools {
        let request = CallRequest {
            workflow_id: &w.id,
            tool,
            step_gate: None,
            approval_granted: false,
            allowed: None,
            now_ms,
        };
        match policy::decide(&config.policies, &history, &running, rates, &request) {
            Decision::Allow => allowed.push(tool.clone()),
            Decision::NeedsApproval { .. } => gated.push(tool.clone()),
            Decision::Deny { violations } => {
                let hints: Vec<String> =
                    violations.iter().map(|v| v.unblock_hint.clone()).collect();
                blocked.push((tool.clone(), hints.join("; ")));
            }
        }
    }
    (allowed, gated, blocked)
}
