//! The lean MCP load generator: raw HTTP/1.1 keep-alive on one TCP connection per session, the
//! `tools/call` body serialized once (only the JSON-RPC id changes per call), and of each answer
//! only the status, the id and `isError` read. It spends less per call than the server it measures,
//! so the MCP figures measure the server, not the client (the official SDK's client spent more CPU
//! per call than the servers it drove). `application/json` and `text/event-stream` answers, with
//! `Content-Length` or chunked bodies, are both read to their end, so the connection is reused.

use crate::load::CallOnce;
use crate::mcp_load::McpCall;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The MCP protocol version the generator speaks (with the `initialize` handshake).
const PROTOCOL: &str = "2025-11-25";

/// One MCP session on one keep-alive connection.
pub struct LeanWorker {
    stream: BufReader<TcpStream>,
    /// `POST … Mcp-Session-Id: …` up to (not including) `Content-Length`.
    head: Vec<u8>,
    /// The measured call's body around its id: `{"jsonrpc":"2.0","id":` … `,"method":"tools/call",…}`.
    body_prefix: Vec<u8>,
    body_suffix: Vec<u8>,
    next_id: u64,
    request: Vec<u8>,
    answer: Vec<u8>,
}

/// What one answer said.
struct Answer {
    status: u16,
    session: Option<String>,
    body: Vec<u8>,
}

impl LeanWorker {
    /// Connects, opens a session (`initialize`, `notifications/initialized`) and calls the
    /// prerequisite once; untimed.
    pub async fn connect(url: &str, call: &McpCall) -> Result<LeanWorker> {
        let (host, path) = split_url(url)?;
        let tcp = TcpStream::connect(&host)
            .await
            .with_context(|| format!("connect to {host}"))?;
        tcp.set_nodelay(true)?;
        let mut worker = LeanWorker {
            stream: BufReader::with_capacity(64 * 1024, tcp),
            head: Vec::new(),
            body_prefix: Vec::new(),
            body_suffix: Vec::new(),
            next_id: 1,
            request: Vec::with_capacity(4096),
            answer: Vec::with_capacity(4096),
        };
        let base = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        );
        let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "conductor-bench-lean", "version": "0.1"}}});
        worker.head = base.clone().into_bytes();
        let answer = worker.post(initialize.to_string().as_bytes()).await?;
        if answer.status != 200 {
            bail!("MCP initialize at {url}: HTTP {}", answer.status);
        }
        let session = answer
            .session
            .with_context(|| format!("MCP initialize at {url}: no Mcp-Session-Id"))?;
        worker.head =
            format!("{base}Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: {PROTOCOL}\r\n")
                .into_bytes();
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let answer = worker.post(initialized.to_string().as_bytes()).await?;
        if !(200..300).contains(&answer.status) {
            bail!(
                "MCP notifications/initialized at {url}: HTTP {}",
                answer.status
            );
        }
        if let Some((tool, arguments)) = &call.prerequisite {
            worker.set_call(tool, &Value::Object(arguments.clone()))?;
            worker.call().await?;
        }
        worker.set_call(&call.tool, &Value::Object(call.arguments.clone()))?;
        Ok(worker)
    }

    /// Serializes the call's body once, around a placeholder id.
    fn set_call(&mut self, tool: &str, arguments: &Value) -> Result<()> {
        let params = json!({"name": tool, "arguments": arguments}).to_string();
        self.body_prefix = br#"{"jsonrpc":"2.0","id":"#.to_vec();
        self.body_suffix = format!(r#","method":"tools/call","params":{params}}}"#).into_bytes();
        Ok(())
    }

    async fn call(&mut self) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let mut digits = itoa_buffer(id);
        let mut body = std::mem::take(&mut self.body_prefix);
        let prefix_len = body.len();
        body.append(&mut digits);
        body.extend_from_slice(&self.body_suffix);
        let answer = self.post(&body).await;
        body.truncate(prefix_len);
        self.body_prefix = body;
        let answer = answer?;
        if answer.status != 200 {
            bail!("MCP tools/call: HTTP {}", answer.status);
        }
        let text = &answer.body;
        let id_field = format!("\"id\":{id}");
        if !contains(text, id_field.as_bytes()) {
            bail!(
                "MCP tools/call: no answer with id {id}: {}",
                String::from_utf8_lossy(text)
            );
        }
        if contains(text, b"\"isError\":true") {
            bail!(
                "MCP tools/call returned an error: {}",
                String::from_utf8_lossy(text)
            );
        }
        Ok(())
    }

    /// One request on the connection and its whole answer.
    async fn post(&mut self, body: &[u8]) -> Result<Answer> {
        self.request.clear();
        self.request.extend_from_slice(&self.head);
        self.request
            .extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        self.request.extend_from_slice(body);
        self.stream.get_mut().write_all(&self.request).await?;
        self.read_answer().await
    }

    async fn read_answer(&mut self) -> Result<Answer> {
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP status line: {line:?}"))?;
        let (mut length, mut chunked, mut session) = (None, false, None);
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("the connection closed in the headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("mcp-session-id") {
                session = Some(value.to_owned());
            }
        }
        self.answer.clear();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .with_context(|| format!("not a chunk size: {line:?}"))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        line.clear();
                        if self.stream.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let start = self.answer.len();
                self.answer.resize(start + size, 0);
                self.stream.read_exact(&mut self.answer[start..]).await?;
                let mut crlf = [0u8; 2];
                self.stream.read_exact(&mut crlf).await?;
            }
        } else if let Some(length) = length {
            self.answer.resize(length, 0);
            self.stream.read_exact(&mut self.answer).await?;
        }
        Ok(Answer {
            status,
            session,
            body: std::mem::take(&mut self.answer),
        })
    }
}

impl CallOnce for LeanWorker {
    async fn call_once(&mut self) -> Result<()> {
        self.call().await
    }
}

/// `http://host:port/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("the lean MCP generator speaks plain http only: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((host.to_owned(), format!("/{path}")))
}

fn itoa_buffer(n: u64) -> Vec<u8> {
    n.to_string().into_bytes()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
