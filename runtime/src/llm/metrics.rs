//! Prometheus figures of the `llm` agents of one process: model calls, tokens and
//! model-call latency by agent type and model, tool calls by agent type and tool,
//! turns stopped by a budget. Labels come from the configuration (agent types, model
//! names, tool names), never from agent keys or message content, so they are bounded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::gateway::prometheus::{family, sample};

/// Upper bounds (seconds) of the model-call latency histogram.
pub const MODEL_LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Whether a call succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// It did.
    Ok,
    /// It failed (after retries, for model calls).
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

/// Why a turn was stopped by the agent rather than answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// `maxIterations` model calls and the model still asked for tools.
    MaxIterations,
    /// The model asked for more than `maxToolCalls` tool calls.
    MaxToolCalls,
    /// The turn used more than `maxTokensPerTurn` tokens.
    MaxTokens,
}

impl Stop {
    fn label(self) -> &'static str {
        match self {
            Self::MaxIterations => "max_iterations",
            Self::MaxToolCalls => "max_tool_calls",
            Self::MaxTokens => "max_tokens_per_turn",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct ModelFigures {
    calls: BTreeMap<Outcome, u64>,
    prompt_tokens: u64,
    completion_tokens: u64,
    buckets: [u64; MODEL_LATENCY_BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
}

#[derive(Debug, Default)]
struct Figures {
    /// (agent type, model) ->
    models: BTreeMap<(String, String), ModelFigures>,
    /// (agent type, tool function name, outcome) -> calls
    tools: BTreeMap<(String, String, Outcome), u64>,
    /// (agent type, why) -> turns
    stops: BTreeMap<(String, Stop), u64>,
}

/// The figures; one per process, shared by every `llm` agent type and `/metrics`.
#[derive(Debug, Default)]
pub struct LlmMetrics {
    figures: Mutex<Figures>,
}

impl LlmMetrics {
    fn with<R>(&self, f: impl FnOnce(&mut Figures) -> R) -> R {
        // A panic while holding this lock only loses counts, so a poisoned lock is used.
        let mut g = self
            .figures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// One model call that took `took`, with the usage the server reported.
    pub fn model_call(
        &self,
        agent_type: &str,
        model: &str,
        outcome: Outcome,
        took: Duration,
        tokens: Option<(u64, u64)>,
    ) {
        self.with(|f| {
            let m = f
                .models
                .entry((agent_type.to_owned(), model.to_owned()))
                .or_default();
            *m.calls.entry(outcome).or_default() += 1;
            if let Some((prompt, completion)) = tokens {
                m.prompt_tokens += prompt;
                m.completion_tokens += completion;
            }
            let secs = took.as_secs_f64();
            for (bound, n) in MODEL_LATENCY_BUCKETS.iter().zip(m.buckets.iter_mut()) {
                if secs <= *bound {
                    *n += 1;
                }
            }
            m.latency_count += 1;
            m.latency_sum += secs;
        });
    }

    /// One tool call.
    pub fn tool_call(&self, agent_type: &str, tool: &str, outcome: Outcome) {
        self.with(|f| {
            *f.tools
                .entry((agent_type.to_owned(), tool.to_owned(), outcome))
                .or_default() += 1;
        });
    }

    /// One turn stopped by a budget.
    pub fn stopped(&self, agent_type: &str, why: Stop) {
        self.with(|f| *f.stops.entry((agent_type.to_owned(), why)).or_default() += 1);
    }

    /// Appends the figures in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let (models, tools, stops) =
            self.with(|f| (f.models.clone(), f.tools.clone(), f.stops.clone()));
        family(
            out,
            "switchboard_llm_model_calls_total",
            "counter",
            "Model calls of llm agents (after retries), by agent type, model and outcome.",
        );
        for ((agent_type, model), m) in &models {
            for (outcome, n) in &m.calls {
                sample(
                    out,
                    "switchboard_llm_model_calls_total",
                    &[
                        ("agent_type", agent_type),
                        ("model", model),
                        ("outcome", outcome.label()),
                    ],
                    *n,
                );
            }
        }
        family(
            out,
            "switchboard_llm_tokens_total",
            "counter",
            "Tokens the model server reported for llm agents' calls, by agent type, model and kind.",
        );
        for ((agent_type, model), m) in &models {
            for (kind, n) in [
                ("prompt", m.prompt_tokens),
                ("completion", m.completion_tokens),
            ] {
                sample(
                    out,
                    "switchboard_llm_tokens_total",
                    &[("agent_type", agent_type), ("model", model), ("kind", kind)],
                    n,
                );
            }
        }
        family(
            out,
            "switchboard_llm_model_call_seconds",
            "histogram",
            "Latency of llm agents' model calls, retries included.",
        );
        for ((agent_type, model), m) in &models {
            let labels = [
                ("agent_type", agent_type.as_str()),
                ("model", model.as_str()),
            ];
            for (bound, n) in MODEL_LATENCY_BUCKETS.iter().zip(m.buckets) {
                let le = bound.to_string();
                let mut l = labels.to_vec();
                l.push(("le", &le));
                sample(out, "switchboard_llm_model_call_seconds_bucket", &l, n);
            }
            let mut l = labels.to_vec();
            l.push(("le", "+Inf"));
            sample(
                out,
                "switchboard_llm_model_call_seconds_bucket",
                &l,
                m.latency_count,
            );
            let _ = std::fmt::Write::write_fmt(
                out,
                format_args!(
                    "switchboard_llm_model_call_seconds_sum{{agent_type=\"{}\",model=\"{}\"}} {}\n",
                    crate::gateway::prometheus::escape(agent_type),
                    crate::gateway::prometheus::escape(model),
                    m.latency_sum
                ),
            );
            sample(
                out,
                "switchboard_llm_model_call_seconds_count",
                &labels,
                m.latency_count,
            );
        }
        family(
            out,
            "switchboard_llm_tool_calls_total",
            "counter",
            "Tool calls of llm agents, by agent type, tool and outcome.",
        );
        for ((agent_type, tool, outcome), n) in &tools {
            sample(
                out,
                "switchboard_llm_tool_calls_total",
                &[
                    ("agent_type", agent_type),
                    ("tool", tool),
                    ("outcome", outcome.label()),
                ],
                *n,
            );
        }
        family(
            out,
            "switchboard_llm_turns_stopped_total",
            "counter",
            "Turns of llm agents stopped by a budget (maxIterations, maxToolCalls, maxTokensPerTurn).",
        );
        for ((agent_type, why), n) in &stops {
            sample(
                out,
                "switchboard_llm_turns_stopped_total",
                &[("agent_type", agent_type), ("reason", why.label())],
                *n,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_render_by_type_model_and_tool() {
        let m = LlmMetrics::default();
        m.model_call(
            "assistant",
            "gpt",
            Outcome::Ok,
            Duration::from_millis(30),
            Some((10, 4)),
        );
        m.model_call(
            "assistant",
            "gpt",
            Outcome::Error,
            Duration::from_secs(2),
            None,
        );
        m.tool_call("assistant", "echo", Outcome::Ok);
        m.stopped("assistant", Stop::MaxToolCalls);
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "switchboard_llm_model_calls_total{agent_type=\"assistant\",model=\"gpt\",outcome=\"ok\"} 1",
            "switchboard_llm_model_calls_total{agent_type=\"assistant\",model=\"gpt\",outcome=\"error\"} 1",
            "switchboard_llm_tokens_total{agent_type=\"assistant\",model=\"gpt\",kind=\"prompt\"} 10",
            "switchboard_llm_tokens_total{agent_type=\"assistant\",model=\"gpt\",kind=\"completion\"} 4",
            "switchboard_llm_model_call_seconds_bucket{agent_type=\"assistant\",model=\"gpt\",le=\"0.05\"} 1",
            "switchboard_llm_model_call_seconds_bucket{agent_type=\"assistant\",model=\"gpt\",le=\"2.5\"} 2",
            "switchboard_llm_model_call_seconds_count{agent_type=\"assistant\",model=\"gpt\"} 2",
            "switchboard_llm_tool_calls_total{agent_type=\"assistant\",tool=\"echo\",outcome=\"ok\"} 1",
            "switchboard_llm_turns_stopped_total{agent_type=\"assistant\",reason=\"max_tool_calls\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
    }
}
