//! `interactive`: a prompt to start a workflow and call tools one at a time, seeing each decision, the
//! reason and hint of a denial, and the next allowed steps.
//!
//! On a terminal it uses rustyline (editing, history); otherwise it reads plain lines from stdin and echoes
//! them, so a scripted session reads like a transcript. The next allowed tools come from the orchestrator
//! (the outlook of `GetWorkflow`), so they account for every rule, the calls running elsewhere, rate limits
//! and the workflow's allow-list.

mod completion;

use crate::cli::{Global, InteractiveArgs};
use crate::client::{Answer, Client};
use crate::control::{Called, announce_gate, call_tool, start_ad_hoc};
use crate::output::Out;
use crate::status::print_workflow;
use completion::PromptCompletion;
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
  quit                            leave (ad-hoc workflows it started end, unless --keep)";

type Editor = rustyline::Editor<PromptCompletion, rustyline::history::DefaultHistory>;

/// Where lines come from: rustyline on a terminal, plain stdin otherwise.
enum LineSource {
    Editor(Box<Editor>),
    Plain(std::io::StdinLock<'static>),
}

impl LineSource {
    fn new(completion: PromptCompletion) -> LineSource {
        if std::io::stdin().is_terminal()
            && let Ok(mut editor) = Editor::new()
        {
            editor.set_helper(Some(completion));
            return LineSource::Editor(Box::new(editor));
        }
        LineSource::Plain(std::io::stdin().lock())
    }

    /// The next line (empty after Ctrl-C, which discards the line), or `None` at the end of input
    /// (Ctrl-D).
    fn read(&mut self, prompt: &str) -> Option<String> {
        tokio::task::block_in_place(|| match self {
            // Ctrl-C discards the half-typed line, as shells do; Ctrl-D (or an error) ends.
            LineSource::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    Some(line)
                }
                Err(rustyline::error::ReadlineError::Interrupted) => Some(String::new()),
                Err(_) => None,
            },
            LineSource::Plain(stdin) => {
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(0) | Err(_) => None,
                    Ok(_) => {
                        let line = line.trim_end_matches(['\n', '\r']).to_owned();
                        outln!("{prompt}{line}");
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
    /// The ad-hoc workflows this session started: they end with it unless `--keep`.
    started: Vec<String>,
    templates: Vec<pb::TemplateInfo>,
    tools: Vec<String>,
    /// The current workflow's template and input, when `start` began a template run: its steps
    /// are called with their own arguments.
    run: Option<(String, Value)>,
}

pub async fn interactive(global: &Global, args: InteractiveArgs) -> anyhow::Result<()> {
    let out = Out {
        json: false,
        ..Out::new(global)
    };
    let client = Client::connect(global).await?;
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
    let mut session = Session {
        out,
        client,
        workflow: None,
        started: Vec::new(),
        templates,
        tools,
        run: None,
    };
    outln!(
        "conductorctl interactive — {} (type `help`)",
        session.client.url
    );
    let mut lines = LineSource::new(PromptCompletion {
        tools: session.tools.clone(),
        templates: session.templates.iter().map(|t| t.name.clone()).collect(),
    });
    while let Some(line) = lines.read("conductor> ") {
        let line = line.trim();
        let (command, rest) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(c, r)| (c, r.trim()));
        let result = match command {
            "" => Ok(()),
            "help" | "?" => {
                outln!("{HELP}");
                Ok(())
            }
            "quit" | "exit" | "q" => break,
            "start" => session.start(rest).await,
            "call" => session.call(rest).await,
            "status" => session.status(false).await,
            "history" => session.status(true).await,
            "tools" => {
                outln!("{}", session.tools.join(", "));
                Ok(())
            }
            "templates" => {
                for t in &session.templates {
                    let steps: Vec<String> = t.steps.iter().map(|s| s.tool.clone()).collect();
                    outln!("{}: {}", t.name, steps.join(" → "));
                }
                Ok(())
            }
            other => {
                outln!("unknown command {other:?}; type `help`");
                Ok(())
            }
        };
        if let Err(e) = result {
            if let Some(crate::client::CliError::Unreachable { .. }) = e.downcast_ref() {
                return Err(e);
            }
            outln!("{} {e:#}", session.out.bad("error:"));
        }
    }
    if args.keep {
        if let Some(id) = &session.workflow {
            outln!(
                "bye; the workflow {id} stays open (`conductorctl workflow {id}`; it ends by itself once idle)"
            );
        }
        return Ok(());
    }
    for id in &session.started {
        let request = pb::EndWorkflowRequest {
            workflow_id: id.clone(),
            reason: "its interactive session ended".into(),
        };
        match session.client.rpc().end_workflow(request).await {
            Ok(_) => outln!(
                "ended ad-hoc workflow {id} (keep it open next time with `interactive --keep`)"
            ),
            Err(status) => outln!("could not end workflow {id}: {}", status.message()),
        }
    }
    if let Some(id) = session
        .workflow
        .as_ref()
        .filter(|id| !session.started.contains(id))
    {
        outln!("bye; the workflow {id} stays in the orchestrator (`conductorctl workflow {id}`)");
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
            let w = start_ad_hoc(&self.client).await?;
            self.started.push(w.id.clone());
            w
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
        outln!("started {what} {}", self.out.bold(&w.id));
        self.run = (!template.is_empty()).then(|| (template.to_owned(), input.clone()));
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
        let explicit = rest
            .split_once(char::is_whitespace)
            .is_some_and(|(_, a)| !a.trim().is_empty());
        let mut args: Value = serde_json::from_str(if args.is_empty() { "{}" } else { args })
            .map_err(|e| anyhow::anyhow!("the arguments are not JSON: {e}"))?;
        if let Some(step_args) = self.step_arguments(tool).await? {
            if explicit && args != step_args {
                anyhow::bail!(
                    "{tool} is this template run's next step, which runs with the step's own arguments, not others:\n  {}\n  write `call {tool}` alone to run it, or `start` an ad-hoc workflow to call {tool} with your own",
                    crate::output::clip(&step_args.to_string(), 300)
                );
            }
            outln!(
                "  the step's arguments: {}",
                crate::output::clip(&step_args.to_string(), 300)
            );
            args = step_args;
        }
        if self.workflow.is_none() {
            let w = start_ad_hoc(&self.client).await?;
            outln!("started ad-hoc workflow {}", self.out.bold(&w.id));
            self.started.push(w.id.clone());
            self.run = None;
            self.workflow = Some(w.id);
        }
        let workflow = self.workflow.clone().unwrap_or_default();
        let out = self.out;
        let called = call_tool(&self.client, &workflow, tool, &args, false, &mut |a| {
            announce_gate(&out, a)
        })
        .await?;
        outln!("{}", called.describe(&self.out, tool));
        match &called {
            Called::Succeeded { result, .. } => outln!(
                "  result: {}",
                crate::output::clip(&result.to_string(), 300)
            ),
            Called::Denied { .. } => outln!("  the call did not run; the workflow goes on"),
            Called::ToolFailed { .. } => {}
        }
        self.next_steps().await
    }

    /// When the current workflow is a template run whose next step calls `tool`: that step's
    /// arguments, from its template with the run's input (and the inputs' defaults) and the earlier
    /// steps' outputs, as the orchestrator's own runs fill them.
    async fn step_arguments(&self, tool: &str) -> anyhow::Result<Option<Value>> {
        let (Some(id), Some((template, input))) = (&self.workflow, &self.run) else {
            return Ok(None);
        };
        let w = self
            .client
            .rpc()
            .get_workflow(pb::GetWorkflowRequest {
                workflow_id: id.clone(),
            })
            .await
            .answer(&self.client)?;
        let Some(info) = self.templates.iter().find(|t| &t.name == template) else {
            return Ok(None);
        };
        let Some(step) = info
            .steps
            .iter()
            .find(|s| s.name == w.next_step && s.tool == tool)
        else {
            return Ok(None);
        };
        let mut input = input.clone();
        if let Some(fields) = input.as_object_mut() {
            for declared in &info.inputs {
                if let Some(default) = declared
                    .default_json
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<Value>(d).ok())
                {
                    fields.entry(declared.name.clone()).or_insert(default);
                }
            }
        }
        let outputs = match serde_json::from_str::<Value>(&w.outputs_json) {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let template_args: Value = serde_json::from_str(&step.arguments_template_json)
            .unwrap_or_else(|_| Value::Object(serde_json::Map::new()));
        conductor_core::template::resolve(&template_args, &input, &outputs)
            .map(Some)
            .map_err(|e| {
                anyhow::anyhow!("the arguments of step {} cannot be filled: {e}", step.name)
            })
    }

    async fn status(&self, history: bool) -> anyhow::Result<()> {
        let Some(id) = &self.workflow else {
            outln!("no workflow yet: `start` one (or just `call` a tool)");
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
            outln!(
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
            outln!(
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
            outln!(
                "  next template step: {} ({})",
                w.next_step,
                tool.unwrap_or("?")
            );
        }
        let mut allowed = Vec::new();
        let mut gated = Vec::new();
        let mut blocked = Vec::new();
        for tool in &w.outlook {
            match pb::DecisionKind::try_from(tool.decision) {
                Ok(pb::DecisionKind::Allow) => allowed.push(tool.tool.as_str()),
                Ok(pb::DecisionKind::NeedsApproval) => gated.push(tool.tool.as_str()),
                _ => blocked.push((tool.tool.as_str(), tool.hint.as_str())),
            }
        }
        outln!(
            "  next allowed: {}",
            if allowed.is_empty() {
                "-".to_owned()
            } else {
                allowed.join(", ")
            }
        );
        if !gated.is_empty() {
            outln!("  allowed after approval: {}", gated.join(", "));
        }
        for (tool, hint) in blocked {
            outln!("  blocked: {tool} — {hint}");
        }
    }
}
