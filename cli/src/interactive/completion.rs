//! Tab completion at the `interactive` prompt: command names, then tool names after `call` and template
//! names after `start`. A pure function of the text before the cursor; rustyline only calls it.

/// The prompt's commands, for Tab completion.
const COMMANDS: [&str; 9] = [
    "start",
    "call",
    "status",
    "history",
    "tools",
    "templates",
    "help",
    "quit",
    "exit",
];

/// Tab completion at the prompt: command names first, then tool names after `call` and template
/// names after `start`.
pub struct PromptCompletion {
    pub tools: Vec<String>,
    pub templates: Vec<String>,
}

impl PromptCompletion {
    /// Where the word under the cursor starts, and what it may become.
    pub fn candidates(&self, before_cursor: &str) -> (usize, Vec<String>) {
        let start = before_cursor
            .rfind(char::is_whitespace)
            .map_or(0, |i| i + 1);
        let word = &before_cursor[start..];
        let earlier: Vec<&str> = before_cursor[..start].split_whitespace().collect();
        let pool: Vec<&str> = match earlier.as_slice() {
            [] => COMMANDS.to_vec(),
            ["call"] => self.tools.iter().map(String::as_str).collect(),
            ["start"] => self.templates.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        let matching = pool
            .into_iter()
            .filter(|c| c.starts_with(word))
            .map(str::to_owned)
            .collect();
        (start, matching)
    }
}

impl rustyline::completion::Completer for PromptCompletion {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(self.candidates(line.get(..pos).unwrap_or(line)))
    }
}

impl rustyline::hint::Hinter for PromptCompletion {
    type Hint = String;
}

impl rustyline::highlight::Highlighter for PromptCompletion {}

impl rustyline::validate::Validator for PromptCompletion {}

impl rustyline::Helper for PromptCompletion {}

#[cfg(test)]
mod tests {
    use super::PromptCompletion;

    #[test]
    fn tab_completes_commands_tools_and_templates() {
        let completion = PromptCompletion {
            tools: vec![
                "validate_data".into(),
                "process_data".into(),
                "send_notification".into(),
            ],
            templates: vec!["order_summary".into(), "customer_onboarding".into()],
        };
        assert_eq!(completion.candidates("ca"), (0, vec!["call".to_owned()]));
        assert_eq!(
            completion.candidates("call va"),
            (5, vec!["validate_data".to_owned()])
        );
        assert_eq!(completion.candidates("call ").1.len(), 3);
        assert_eq!(
            completion.candidates("start or"),
            (6, vec!["order_summary".to_owned()])
        );
        assert!(completion.candidates("call validate_data {").1.is_empty());
    }
}
