//! Schema descriptions as prose: the hard wraps of doc comments joined into spaces.
//!
//! schemars copies a doc comment line by line, so a field documented over three
//! `///` lines reaches `kubectl explain` as three broken lines. A line break is kept
//! where it carries meaning: a blank line between paragraphs, the start of a list
//! item, and anything inside a code fence. Pure; `crate::all` applies it to every
//! description of every CRD (ours and the embedded Kubernetes types alike).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    JSONSchemaPropsOrStringArray,
};

/// `text` with every line break inside a paragraph (outside a code fence, not before
/// a list item) replaced by one space.
pub fn reflow(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, (line, keep_break)) in lines(text).enumerate() {
        if i == 0 {
            out.push_str(line);
        } else if keep_break {
            out.push('\n');
            out.push_str(line);
        } else {
            out.truncate(out.trim_end().len());
            out.push(' ');
            out.push_str(line.trim_start());
        }
    }
    out
}

/// The line breaks of `text` that `reflow` would join, each shown as the end of one
/// line and the start of the next (empty when `text` reads as prose).
pub fn hard_wraps(text: &str) -> Vec<String> {
    let mut wraps = Vec::new();
    let mut previous = "";
    for (i, (line, keep_break)) in lines(text).enumerate() {
        if i > 0 && !keep_break {
            wraps.push(format!(
                "{}\n{}",
                tail(previous, 30),
                head(line.trim_start(), 30)
            ));
        }
        previous = line;
    }
    wraps
}

/// Reflows every description in `crd`: its schemas (nested ones included) and its
/// printer columns.
pub fn reflow_crd(crd: &mut CustomResourceDefinition) {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            reflow_schema(schema);
        }
        for column in version.additional_printer_columns.iter_mut().flatten() {
            reflow_option(&mut column.description);
        }
    }
}

fn reflow_schema(schema: &mut JSONSchemaProps) {
    reflow_option(&mut schema.description);
    let maps = [
        schema.properties.as_mut(),
        schema.pattern_properties.as_mut(),
        schema.definitions.as_mut(),
    ];
    for child in maps.into_iter().flatten().flat_map(|m| m.values_mut()) {
        reflow_schema(child);
    }
    let lists = [
        schema.all_of.as_mut(),
        schema.any_of.as_mut(),
        schema.one_of.as_mut(),
    ];
    for child in lists.into_iter().flatten().flatten() {
        reflow_schema(child);
    }
    if let Some(not) = schema.not.as_mut() {
        reflow_schema(not);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(child)) => reflow_schema(child),
        Some(JSONSchemaPropsOrArray::Schemas(children)) => {
            children.iter_mut().for_each(reflow_schema)
        }
        None => {}
    }
    for child in [
        schema.additional_properties.as_mut(),
        schema.additional_items.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if let JSONSchemaPropsOrBool::Schema(child) = child {
            reflow_schema(child);
        }
    }
    for dependency in schema.dependencies.iter_mut().flat_map(|d| d.values_mut()) {
        if let JSONSchemaPropsOrStringArray::Schema(child) = dependency {
            reflow_schema(child);
        }
    }
}

fn reflow_option(description: &mut Option<String>) {
    if let Some(text) = description.as_mut() {
        *text = reflow(text);
    }
}

/// The lines of `text`, each with whether the break before it carries meaning (a
/// paragraph break, a list item, inside a code fence; always true for the first line).
fn lines(text: &str) -> impl Iterator<Item = (&str, bool)> {
    let mut first = true;
    let mut previous_blank = false;
    let mut in_fence = false;
    text.split('\n').map(move |line| {
        let blank = line.trim().is_empty();
        let keep_break = first || blank || previous_blank || in_fence || is_list_item(line);
        // A fence opens or closes with each "```"; Kubernetes' own docs put them mid-line.
        if line.matches("```").count() % 2 == 1 {
            in_fence = !in_fence;
        }
        first = false;
        previous_blank = blank;
        (line, keep_break)
    })
}

/// Whether `line` starts a Markdown list item: `- `, `* `, `+ `, `1. ` or `1) `.
fn is_list_item(line: &str) -> bool {
    let line = line.trim_start();
    if ["- ", "* ", "+ "].iter().any(|m| line.starts_with(m)) {
        return true;
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    digits > 0 && [". ", ") "].iter().any(|m| line[digits..].starts_with(m))
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.char_indices().rev().nth(n).map_or(0, |(i, _)| i);
    &s[start..]
}

fn head(s: &str, n: usize) -> &str {
    let end = s.char_indices().nth(n).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::{hard_wraps, reflow};

    #[test]
    fn joins_the_wraps_of_a_doc_comment() {
        let doc = "Desired state of an AgentRuntime: which agents to host, on how many pods, over\n\
                   which Kafka cluster and topic prefix.";
        assert_eq!(
            reflow(doc),
            "Desired state of an AgentRuntime: which agents to host, on how many pods, over \
             which Kafka cluster and topic prefix."
        );
        assert_eq!(
            hard_wraps(doc),
            ["to host, on how many pods, over\nwhich Kafka cluster and topic "]
        );
    }

    #[test]
    fn keeps_paragraph_breaks_and_list_items() {
        let doc =
            "First paragraph,\nwrapped.\n\nSecond:\n- one item\n  wrapped\n- two\n1. three\n\nEnd.";
        assert_eq!(
            reflow(doc),
            "First paragraph, wrapped.\n\nSecond:\n- one item wrapped\n- two\n1. three\n\nEnd."
        );
        assert!(hard_wraps(&reflow(doc)).is_empty());
    }

    #[test]
    fn leaves_code_fences_and_prose_alone() {
        let fenced = "Grammar:\n\n```\na ::= b\n  | c\n```";
        assert_eq!(reflow(fenced), fenced);
        let prose = "One line. Another sentence.";
        assert_eq!(reflow(prose), prose);
        assert_eq!(reflow(""), "");
    }
}
