//! The display of a followed template run: indicatif bars (one line per step with its state and elapsed
//! time, and a bar for the workflow) on a terminal, plain lines otherwise, nothing but notes with `--json`.
//!
//! It only shows what the events of the run say; deciding what they mean is `run.rs`'s job.

use crate::output::{Out, duration_us};
use crate::run::RunEnd;
use conductor_proto::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::Duration;

/// The display of one run: indicatif bars on a terminal, plain lines otherwise (or nothing with --json).
pub struct RunView<'a> {
    out: &'a Out,
    template: &'a pb::TemplateInfo,
    workflow_id: String,
    bars: Option<(MultiProgress, Vec<ProgressBar>, ProgressBar)>,
    /// Where each step got to, so that the end can say which steps never ran.
    reached: RefCell<Vec<Reached>>,
    /// A failed step's details, held on a terminal until the bars are done: printed then, they come
    /// below the steps and above the summary instead of above the bars.
    held: RefCell<Vec<String>>,
}

/// How far a step got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reached {
    Pending,
    Underway,
    Done,
}

impl<'a> RunView<'a> {
    pub fn new(out: &'a Out, template: &'a pb::TemplateInfo, workflow_id: &str) -> Self {
        let total = template.steps.len();
        let header = format!(
            "{} {} — template {} ({total} steps)",
            out.bold("▶ workflow"),
            workflow_id,
            template.name
        );
        let bars = if out.json {
            None
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let _ = multi.println(header);
            let steps = template
                .steps
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(step_style("  {prefix} {msg}"));
                    bar.set_prefix(format!("[{}/{total}] {} ({})", i + 1, step.name, step.tool));
                    bar.set_message("pending");
                    bar
                })
                .collect();
            let overall = multi.add(ProgressBar::new(total as u64));
            let bar = if out.color {
                "  {bar:30.green/white} {pos}/{len} steps  {elapsed}"
            } else {
                "  {bar:30} {pos}/{len} steps  {elapsed}"
            };
            overall.set_style(
                ProgressStyle::with_template(bar)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    // Filled, the step under way, and a track that shows even at 0/N.
                    .progress_chars("█▓░"),
            );
            overall.enable_steady_tick(Duration::from_millis(200));
            Some((multi, steps, overall))
        } else {
            outln!("{header}");
            None
        };
        RunView {
            out,
            template,
            workflow_id: workflow_id.to_owned(),
            bars,
            reached: RefCell::new(vec![Reached::Pending; total]),
            held: RefCell::new(Vec::new()),
        }
    }

    fn label(&self, index: usize) -> String {
        let step = &self.template.steps[index];
        format!(
            "[{}/{}] {} ({})",
            index + 1,
            self.template.steps.len(),
            step.name,
            step.tool
        )
    }

    pub fn note(&self, text: &str) {
        match &self.bars {
            Some((multi, ..)) => {
                let _ = multi.println(text);
            }
            None if self.out.json => eprintln!("{text}"),
            None => outln!("{text}"),
        }
    }

    /// A step's details (several lines): under the steps, before the summary.
    pub fn detail(&self, text: &str) {
        match &self.bars {
            Some(_) => self.held.borrow_mut().push(text.to_owned()),
            None => self.note(text),
        }
    }

    fn reach(&self, index: usize, reached: Reached) {
        if let Some(step) = self.reached.borrow_mut().get_mut(index) {
            *step = reached;
        }
    }

    pub fn step_state(&self, index: usize, state: &str, ticking: bool) {
        self.reach(index, Reached::Underway);
        match &self.bars {
            Some((_, steps, _)) => {
                let bar = &steps[index];
                if ticking {
                    bar.reset_elapsed();
                    bar.set_style(step_style("  {prefix} {spinner} {msg} {elapsed}"));
                    bar.enable_steady_tick(Duration::from_millis(100));
                }
                bar.set_message(state.to_owned());
            }
            None if self.out.json => {}
            None => outln!("  {} {}", self.label(index), self.out.state(state)),
        }
    }

    pub fn step_done(&self, index: usize, succeeded: bool, detail: &str) {
        self.reach(index, Reached::Done);
        let mark = if succeeded {
            self.out.ok("✔")
        } else {
            self.out.bad("✘")
        };
        match &self.bars {
            Some((_, steps, overall)) => {
                steps[index].set_style(step_style("  {prefix} {msg}"));
                steps[index].finish_with_message(format!("{mark} {detail}"));
                if succeeded {
                    overall.inc(1);
                }
            }
            None if self.out.json => {}
            None => outln!("  {} {mark} {detail}", self.label(index)),
        }
    }

    pub fn finish(&self, end: &RunEnd, duration: u64) {
        let text = match end {
            RunEnd::Completed => format!(
                "{} workflow {} completed in {}",
                self.out.ok("✔"),
                self.workflow_id,
                duration_us(duration)
            ),
            RunEnd::Failed(reason) => format!(
                "{} workflow {} {reason}",
                self.out.bad("✘"),
                self.workflow_id
            ),
        };
        let reached = self.reached.borrow().clone();
        if let Some((_, steps, overall)) = &self.bars {
            // A step that never ended did not run (or was stopped where it stood): say so, rather
            // than leave it "pending" under a finished workflow.
            for (bar, reached) in steps.iter().zip(&reached) {
                bar.set_style(step_style("  {prefix} {msg}"));
                match reached {
                    Reached::Done => {}
                    Reached::Pending => bar.abandon_with_message(self.out.dim("– not run")),
                    Reached::Underway => {
                        let was = bar.message();
                        bar.abandon_with_message(format!("{} {was}", self.out.bad("✘")));
                    }
                }
            }
            overall.abandon();
            // Every bar has ended and stays drawn: what is printed now comes below them, in order.
            for held in self.held.borrow().iter() {
                eprintln!("{held}");
            }
            eprintln!("{text}");
        } else if !self.out.json {
            if *end != RunEnd::Completed {
                for (index, _) in reached
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| **r == Reached::Pending)
                {
                    outln!("  {} {}", self.label(index), self.out.dim("– not run"));
                }
            }
            outln!("{text}");
        }
    }
}

fn step_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}
