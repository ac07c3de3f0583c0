//! What MCP servers offer besides tools, passed through to the client: resources and resource
//! templates, prompts, completions, subscriptions and the log level.
//!
//! Reading a resource and getting a prompt are calls like any other (SPEC §9): decided by the
//! rules under the names `resources.SERVER` and `prompts.SERVER` (an allow-list admits them, a rule
//! can name them, the server's labels flow into the workflow from what they bring in), recorded
//! with their arguments (the URI; the prompt's name and arguments) and their answer, counted in
//! `/metrics`, in the caller's workflow. A refusal is a JSON-RPC error naming every blocking rule.
//!
//! Lists are filtered by the caller's allow-list as tools are, and merged over the servers it may
//! use. URIs and prompt names pass unchanged: a read goes to the server that listed the URI (or
//! whose template matches it), a prompt to the server that listed its name; when two servers list
//! one prompt name, the first server (by name) has it, and the other's is not offered (logged).
//! Subscriptions and the log level are forwarded to the servers; a downstream server is shared by
//! every client, so a client's `logging/setLevel` sets the server's level for all, and each client
//! still receives only what its own level admits.

use super::handler::{CallContext, Session};
use crate::config::{RouteKind, ServerConfig};
use crate::error::Error;
use crate::gateway::{CallResult, CallSpec};
use rmcp::model::{
    CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResponse,
    InputRequiredResult, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    Prompt, ReadResourceRequestParams, ReadResourceResponse, Reference, Resource, ResourceTemplate,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// How many pages of one server's list are read before the list is taken as complete.
const MAX_PAGES: usize = 64;
/// How many items of one server's list are kept: a server cannot make a listing hold more.
const MAX_ITEMS: usize = 10_000;
/// How often at most a read of a URI (or a prompt) no list names asks the servers for their lists
/// again: a caller cannot turn reads of made-up URIs into a stream of listings downstream.
const RELIST_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Which server offers which resource, resource template and prompt, as their lists last said.
#[derive(Default)]
pub(crate) struct Owners {
    resources: HashMap<String, String>,
    templates: Vec<(String, String)>,
    prompts: HashMap<String, String>,
    /// When a read of a URI no list named last asked the servers for their lists.
    resources_relisted: Option<std::time::Instant>,
    /// When a prompt no list named last had the servers asked for their lists.
    prompts_relisted: Option<std::time::Instant>,
}

impl Owners {
    /// Whether a lookup that found nothing may ask the servers for their lists now (and notes
    /// that it does), given when one last did.
    fn may_relist(last: &mut Option<std::time::Instant>) -> bool {
        if last.is_some_and(|at| at.elapsed() < RELIST_AFTER) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }
}

/// A log message's severity, least severe first (RFC 5424, as MCP orders them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Severity(u8);

impl Severity {
    #[allow(deprecated)]
    pub(super) fn of(level: rmcp::model::LoggingLevel) -> Severity {
        use rmcp::model::LoggingLevel;
        Severity(match level {
            LoggingLevel::Debug => 0,
            LoggingLevel::Info => 1,
            LoggingLevel::Notice => 2,
            LoggingLevel::Warning => 3,
            LoggingLevel::Error => 4,
            LoggingLevel::Critical => 5,
            LoggingLevel::Alert => 6,
            LoggingLevel::Emergency => 7,
        })
    }
}

/// Whether `uri` is one `template` (RFC 6570, level 1: `{name}` stands for any non-empty text
/// without `/`) describes.
fn template_matches(template: &str, uri: &str) -> bool {
    let mut rest = uri;
    let mut parts = template.split('{');
    let Some(head) = parts.next() else {
        return false;
    };
    let Some(after) = rest.strip_prefix(head) else {
        return false;
    };
    rest = after;
    for part in parts {
        let Some((_, literal)) = part.split_once('}') else {
            return false;
        };
        // The variable takes up to the next literal (or to the end), at least one character, and
        // no `/` (a path segment).
        let end = if literal.is_empty() {
            rest.len()
        } else {
            match rest.get(1..).and_then(|r| r.find(literal)) {
                Some(at) => at + 1,
                None => return false,
            }
        };
        if end == 0 || rest[..end].contains('/') {
            return false;
        }
        rest = &rest[end + literal.len()..];
    }
    rest.is_empty()
}

impl Session {
    /// The servers whose `kind` the caller may use, by rule name.
    fn offering(&self, context: &CallContext, kind: RouteKind) -> Vec<(String, ServerConfig)> {
        let workflow = self.bound_workflow();
        self.gateway
            .offering(&context.caller(self.front), workflow.as_deref(), kind)
    }

    /// Every page of one server's list of `field` (`resources`, `resourceTemplates`, `prompts`).
    async fn list_of<T: DeserializeOwned>(
        &self,
        server: &ServerConfig,
        method: &str,
        field: &str,
    ) -> Result<Vec<T>, Error> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(cursor) => json!({ "cursor": cursor }),
                None => json!({}),
            };
            let mut page = self.gateway.ask_server(server, method, params).await?;
            let listed = page.get_mut(field).map(Value::take).unwrap_or_default();
            let listed: Vec<T> = serde_json::from_value(listed).map_err(|e| Error::Downstream {
                server: server.name.clone(),
                tool: method.to_owned(),
                message: format!("its {field} are not what MCP says: {e}"),
            })?;
            items.extend(listed);
            if items.len() >= MAX_ITEMS {
                tracing::warn!(server = %server.name, %method, "the server lists more than {MAX_ITEMS} items; the rest are not offered");
                items.truncate(MAX_ITEMS);
                break;
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() && cursor.as_deref() != Some(next) => {
                    cursor = Some(next.to_owned());
                }
                _ => break,
            }
        }
        Ok(items)
    }

    /// `resources/list`: every resource of the servers the caller may read from.
    pub(super) async fn list_resources(
        &self,
        context: &CallContext,
    ) -> Result<ListResourcesResult, Error> {
        let mut all = Vec::new();
        for (_, server) in self.offering(context, RouteKind::ReadResource) {
            match self
                .list_of::<Resource>(&server, "resources/list", "resources")
                .await
            {
                Ok(resources) => {
                    let mut owners = self.owners();
                    owners.resources.retain(|_, owner| *owner != server.name);
                    for resource in &resources {
                        owners
                            .resources
                            .insert(resource.uri.clone(), server.name.clone());
                    }
                    drop(owners);
                    all.extend(resources);
                }
                Err(e) => {
                    tracing::warn!(server = %server.name, error = %e, "cannot list the server's resources")
                }
            }
        }
        Ok(ListResourcesResult::with_all_items(all))
    }

    /// `resources/templates/list`: every resource template of the servers the caller may read from.
    pub(super) async fn list_resource_templates(
        &self,
        context: &CallContext,
    ) -> Result<ListResourceTemplatesResult, Error> {
        let mut all = Vec::new();
        for (_, server) in self.offering(context, RouteKind::ReadResource) {
            match self
                .list_of::<ResourceTemplate>(
                    &server,
                    "resources/templates/list",
                    "resourceTemplates",
                )
                .await
            {
                Ok(templates) => {
                    self.keep_templates(&server, &templates);
                    all.extend(templates);
                }
                Err(e) => {
                    tracing::warn!(server = %server.name, error = %e, "cannot list the server's resource templates")
                }
            }
        }
        Ok(ListResourceTemplatesResult::with_all_items(all))
    }

    fn keep_templates(&self, server: &ServerConfig, templates: &[ResourceTemplate]) {
        let mut owners = self.owners();
        owners.templates.retain(|(_, owner)| *owner != server.name);
        for template in templates {
            owners
                .templates
                .push((template.uri_template.clone(), server.name.clone()));
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.shared.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server of the caller's that offers `uri`: the one that listed it, else the one whose
    /// template matches it, asking the servers for their lists when no list known so far says.
    async fn resource_owner(&self, context: &CallContext, uri: &str) -> Result<String, Error> {
        let offering = self.offering(context, RouteKind::ReadResource);
        let known = |owners: &Owners| {
            owners
                .resources
                .get(uri)
                .or_else(|| {
                    owners
                        .templates
                        .iter()
                        .find(|(template, _)| template_matches(template, uri))
                        .map(|(_, owner)| owner)
                })
                .filter(|owner| offering.iter().any(|(_, s)| s.name == **owner))
                .cloned()
        };
        if let Some(owner) = known(&self.owners()) {
            return Ok(owner);
        }
        if let [(_, only)] = offering.as_slice() {
            return Ok(only.name.clone());
        }
        if !Owners::may_relist(&mut self.owners().resources_relisted) {
            return Err(unknown_resource(uri));
        }
        self.list_resources(context).await?;
        for (_, server) in &offering {
            if let Ok(templates) = self
                .list_of::<ResourceTemplate>(
                    server,
                    "resources/templates/list",
                    "resourceTemplates",
                )
                .await
            {
                self.keep_templates(server, &templates);
            }
        }
        known(&self.owners()).ok_or_else(|| unknown_resource(uri))
    }

    /// The server of the caller's that offers the prompt `name`.
    async fn prompt_owner(&self, context: &CallContext, name: &str) -> Result<String, Error> {
        let offering = self.offering(context, RouteKind::GetPrompt);
        let known = |owners: &Owners| {
            owners
                .prompts
                .get(name)
                .filter(|owner| offering.iter().any(|(_, s)| s.name == **owner))
                .cloned()
        };
        if let Some(owner) = known(&self.owners()) {
            return Ok(owner);
        }
        if !Owners::may_relist(&mut self.owners().prompts_relisted) {
            return Err(unknown_prompt(name));
        }
        self.list_prompts(context).await?;
        known(&self.owners()).ok_or_else(|| unknown_prompt(name))
    }

    /// `prompts/list`: every prompt of the servers the caller may get prompts from.
    pub(super) async fn list_prompts(
        &self,
        context: &CallContext,
    ) -> Result<ListPromptsResult, Error> {
        let mut all: Vec<Prompt> = Vec::new();
        for (_, server) in self.offering(context, RouteKind::GetPrompt) {
            match self
                .list_of::<Prompt>(&server, "prompts/list", "prompts")
                .await
            {
                Ok(prompts) => {
                    let mut owners = self.owners();
                    owners.prompts.retain(|_, owner| *owner != server.name);
                    for prompt in prompts {
                        if all.iter().any(|p| p.name == prompt.name) {
                            tracing::warn!(server = %server.name, prompt = %prompt.name, "another server offers a prompt of this name first: this one is not offered");
                            continue;
                        }
                        owners
                            .prompts
                            .insert(prompt.name.clone(), server.name.clone());
                        all.push(prompt);
                    }
                }
                Err(e) => {
                    tracing::warn!(server = %server.name, error = %e, "cannot list the server's prompts")
                }
            }
        }
        Ok(ListPromptsResult::with_all_items(all))
    }

    /// `resources/read`: a call of `resources.SERVER` with the URI, decided and recorded.
    pub(super) async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        mut context: CallContext,
    ) -> Result<ReadResourceResponse, Error> {
        answering(
            &mut context,
            request.input_responses.as_ref(),
            request.request_state.as_ref(),
        );
        let owner = self.resource_owner(&context, &request.uri).await?;
        let answer = self
            .governed(
                crate::config::resources_name(&owner),
                json!({ "uri": request.uri }),
                context,
            )
            .await?;
        Ok(match input_required(&owner, "resources/read", &answer)? {
            Some(needs) => ReadResourceResponse::InputRequired(needs),
            None => ReadResourceResponse::Complete(read_answer(&owner, "resources/read", answer)?),
        })
    }

    /// `prompts/get`: a call of `prompts.SERVER` with the prompt's name and arguments, decided and
    /// recorded.
    pub(super) async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        mut context: CallContext,
    ) -> Result<GetPromptResponse, Error> {
        answering(
            &mut context,
            request.input_responses.as_ref(),
            request.request_state.as_ref(),
        );
        let owner = self.prompt_owner(&context, &request.name).await?;
        let mut params = Map::new();
        params.insert("name".into(), Value::String(request.name));
        if let Some(arguments) = request.arguments {
            params.insert("arguments".into(), Value::Object(arguments));
        }
        let answer = self
            .governed(
                crate::config::prompts_name(&owner),
                Value::Object(params),
                context,
            )
            .await?;
        Ok(match input_required(&owner, "prompts/get", &answer)? {
            Some(needs) => GetPromptResponse::InputRequired(needs),
            None => GetPromptResponse::Complete(read_answer(&owner, "prompts/get", answer)?),
        })
    }

    /// A read or a prompt through the one call path, in the caller's workflow: its answer as the
    /// server gave it, or the refusal.
    async fn governed(
        &self,
        name: String,
        arguments: Value,
        context: CallContext,
    ) -> Result<Value, Error> {
        let (workflow_id, _) = self.workflow_for(&context).await?;
        let spec = CallSpec {
            workflow_id: workflow_id.clone(),
            tool: name.clone(),
            arguments,
            caller: context.caller(self.front),
            step: None,
        };
        let session_free = context.session_free.map(std::sync::Arc::new);
        let report = self.gateway.call_for(spec, None, session_free).await?;
        match report.result {
            CallResult::Succeeded(_) => report.served.map(|v| (*v).clone()).ok_or_else(|| {
                Error::Internal(format!("{name} answered without a result; this is a bug"))
            }),
            CallResult::Failed(failure) => Err(Error::Downstream {
                server: name,
                tool: failure.code,
                message: failure.message,
            }),
            CallResult::Denied(violations) => Err(Error::PermissionDenied(
                super::reply::denial_text(&name, &violations, &workflow_id),
            )),
        }
    }

    /// `completion/complete`: asked of the server that offers the prompt or the resource template
    /// the request refers to.
    pub(super) async fn complete(
        &self,
        request: CompleteRequestParams,
        context: &CallContext,
    ) -> Result<CompleteResult, Error> {
        let owner = match &request.r#ref {
            Reference::Prompt(prompt) => self.prompt_owner(context, &prompt.name).await?,
            Reference::Resource(resource) => self.resource_owner(context, &resource.uri).await?,
            _ => {
                return Err(Error::InvalidArgument(
                    "completion/complete: the ref is neither ref/prompt nor ref/resource".into(),
                ));
            }
        };
        let server = self.server(&owner)?;
        let mut params = serde_json::to_value(&request)
            .map_err(|e| Error::InvalidArgument(format!("completion/complete: {e}")))?;
        if let Some(params) = params.as_object_mut() {
            params.remove("_meta");
        }
        let answer = self
            .gateway
            .ask_server(&server, "completion/complete", params)
            .await?;
        read_answer(&owner, "completion/complete", answer)
    }

    /// `resources/subscribe` and `resources/unsubscribe`, to the server that offers the URI.
    pub(super) async fn subscription(
        &self,
        method: &str,
        uri: &str,
        context: &CallContext,
        owner_found: impl FnOnce(&str),
    ) -> Result<String, Error> {
        let owner = self.resource_owner(context, uri).await?;
        let server = self.server(&owner)?;
        // Before the server is asked: it may announce a change before its answer arrives.
        owner_found(&owner);
        self.gateway
            .ask_server(&server, method, json!({ "uri": uri }))
            .await?;
        Ok(owner)
    }

    /// `subscriptions/listen` of a session-free client (SEP-2575; the SDK has acknowledged it): each
    /// server the caller may use that speaks that era is asked to listen with the accepted filter,
    /// and what it announces goes to the client's stream (the SDK's sink keeps to the filter and
    /// tags each with the subscription's id), until the client closes it.
    pub(super) async fn listen(
        &self,
        subscription: rmcp::service::SubscriptionContext,
        context: CallContext,
    ) -> Result<(), Error> {
        use crate::downstream::Heard;
        let Some(client) = context.session_free.clone() else {
            subscription.cancelled().await;
            return Ok(());
        };
        let filter = serde_json::to_value(subscription.accepted())
            .map_err(|e| Error::Internal(format!("the subscription filter: {e}")))?;
        let (heard, mut announced) = tokio::sync::mpsc::channel(64);
        let mut servers: Vec<ServerConfig> = Vec::new();
        for kind in [
            RouteKind::Tool,
            RouteKind::ReadResource,
            RouteKind::GetPrompt,
        ] {
            for (_, server) in self.offering(&context, kind) {
                if !servers.iter().any(|s| s.name == server.name) {
                    servers.push(server);
                }
            }
        }
        // Every listener ends with the subscription (a JoinSet aborts its tasks when dropped).
        let mut listening = tokio::task::JoinSet::new();
        for server in servers {
            let (gateway, filter, client, heard) = (
                self.gateway.clone(),
                filter.clone(),
                client.clone(),
                heard.clone(),
            );
            listening.spawn(async move {
                if let Err(e) = gateway.listen_to(&server, &filter, &client, &heard).await {
                    tracing::info!(server = %server.name, error = %e, "the server's announcements cannot be heard");
                }
            });
        }
        drop(heard);
        let sink = subscription.sink();
        loop {
            tokio::select! {
                () = subscription.cancelled() => return Ok(()),
                heard = announced.recv() => {
                    let sent = match heard {
                        Some(Heard::ToolsChanged) => sink.notify_tool_list_changed().await,
                        Some(Heard::PromptsChanged) => sink.notify_prompt_list_changed().await,
                        Some(Heard::ResourcesChanged) => sink.notify_resource_list_changed().await,
                        Some(Heard::ResourceUpdated(uri)) => sink.notify_resource_updated(uri).await,
                        // No server announces anything more: the stream stays open for the
                        // client, as a server that has nothing to say keeps it.
                        None => {
                            subscription.cancelled().await;
                            return Ok(());
                        }
                    };
                    if let Err(e) = sent {
                        tracing::debug!(error = %e, "an announcement did not reach the listening client");
                    }
                }
            }
        }
    }

    /// `logging/setLevel`: this client hears log messages from `level` up, and each server it may
    /// use is asked for them (a server that cannot be reached is logged and left).
    #[allow(deprecated)]
    pub(super) async fn set_level(
        &self,
        level: rmcp::model::LoggingLevel,
        context: &CallContext,
    ) -> Result<(), Error> {
        *self.log_level.lock().unwrap_or_else(|e| e.into_inner()) = Some(Severity::of(level));
        let mut asked = Vec::new();
        let servers = self
            .offering(context, RouteKind::ReadResource)
            .into_iter()
            .chain(self.offering(context, RouteKind::GetPrompt));
        for (_, server) in servers {
            if asked.contains(&server.name) {
                continue;
            }
            asked.push(server.name.clone());
            if let Err(e) = self
                .gateway
                .ask_server(&server, "logging/setLevel", json!({ "level": level }))
                .await
            {
                tracing::info!(server = %server.name, error = %e, "the server did not take the log level");
            }
        }
        Ok(())
    }

    /// Whether the client asked for log messages.
    pub(super) fn wants_logs(&self) -> bool {
        self.log_level
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn server(&self, name: &str) -> Result<ServerConfig, Error> {
        self.gateway
            .config()
            .servers
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Unavailable {
                server: name.to_owned(),
                message: "no longer configured".into(),
            })
    }
}

fn unknown_resource(uri: &str) -> Error {
    Error::InvalidArgument(format!(
        "no server you may read from offers the resource {uri:?}; resources/list and resources/templates/list say which do"
    ))
}

fn unknown_prompt(name: &str) -> Error {
    Error::InvalidArgument(format!(
        "no server you may use offers the prompt {name:?}; prompts/list says which there are"
    ))
}

/// A server's answer as the MCP type it must be. A server of an earlier era sends no
/// `resultType`: the result says it is complete, as a 2026-07-28 client requires (the SDK takes it
/// out again for a client of an earlier era).
/// A session-free client's answers to the input a server asked for, carried with its retry.
fn answering(
    context: &mut CallContext,
    responses: Option<&rmcp::model::InputResponses>,
    state: Option<&String>,
) {
    if let Some(session_free) = context.session_free.as_mut() {
        session_free.input_responses = responses.and_then(|r| serde_json::to_value(r).ok());
        session_free.request_state = state.cloned().map(Value::String);
    }
}

/// A server's `input_required` answer (SEP-2322), as it gave it; `None` for any other.
fn input_required(
    server: &str,
    method: &str,
    answer: &Value,
) -> Result<Option<InputRequiredResult>, Error> {
    if answer.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return Ok(None);
    }
    read_answer(server, method, answer.clone()).map(Some)
}

fn read_answer<T: DeserializeOwned>(
    server: &str,
    method: &str,
    mut answer: Value,
) -> Result<T, Error> {
    if let Some(result) = answer.as_object_mut() {
        result
            .entry("resultType")
            .or_insert_with(|| Value::String("complete".into()));
    }
    serde_json::from_value(answer).map_err(|e| Error::Downstream {
        server: server.to_owned(),
        tool: method.to_owned(),
        message: format!("the answer is not what MCP says: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::{Owners, template_matches};

    #[test]
    fn a_lookup_that_finds_nothing_relists_at_most_once_a_while() {
        let mut last = None;
        assert!(Owners::may_relist(&mut last), "the first may");
        assert!(!Owners::may_relist(&mut last), "the next, at once, may not");
        last = last.and_then(|at: std::time::Instant| at.checked_sub(super::RELIST_AFTER));
        assert!(
            Owners::may_relist(&mut last),
            "once the interval has passed, again"
        );
    }

    #[test]
    fn templates_match_one_segment_per_variable() {
        assert!(template_matches(
            "test://template/{id}/data",
            "test://template/123/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template//data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template/1/2/data"
        ));
        assert!(template_matches("file:///{name}", "file:///a.txt"));
        assert!(!template_matches("file:///{name}", "file:///"));
        assert!(template_matches("x://{a}-{b}", "x://one-two"));
        assert!(!template_matches("x://fixed", "x://fixed/more"));
        assert!(template_matches("x://fixed", "x://fixed"));
    }
}
