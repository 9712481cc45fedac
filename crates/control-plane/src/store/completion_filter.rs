//! The completion filter: a tree of conditions ([`CompletionCondition`]) scoped to one project,
//! compiled into one parameterized `WHERE` clause that means the same on SQLite and PostgreSQL.
//!
//! Every leaf compiles to a two-valued predicate (never SQL `NULL`), so `NOT` is plain
//! negation: "model is not `a`" also selects completions without a model. User values only ever
//! travel as bind arguments (`$1..`), never inside the SQL text.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

use super::Label;

/// Which completions a list, group or statistic covers: those of `project_id` that satisfy
/// `condition`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionFilter {
    pub project_id: String,
    pub condition: CompletionCondition,
}

impl CompletionFilter {
    /// Every completion of a project.
    pub fn project(project_id: &str) -> Self {
        Self {
            project_id: project_id.to_owned(),
            condition: CompletionCondition::All(Vec::new()),
        }
    }

    /// This filter narrowed by one more condition.
    pub fn and(&self, condition: CompletionCondition) -> Self {
        Self {
            project_id: self.project_id.clone(),
            condition: CompletionCondition::All(vec![self.condition.clone(), condition]),
        }
    }
}

/// A condition on a completion. Ids are store ids: callers resolve keys first, and an unknown
/// model or metric is given as an id that matches nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionCondition {
    /// Every condition holds; `All(vec![])` holds always.
    All(Vec<CompletionCondition>),
    /// At least one condition holds; `Any(vec![])` never holds.
    Any(Vec<CompletionCondition>),
    Not(Box<CompletionCondition>),
    /// The completion's model is one of these.
    Model(Vec<String>),
    /// The completion has a label `key`.
    LabelPresent {
        key: String,
    },
    /// The completion has a label `key` whose value is one of `values`.
    Label {
        key: String,
        values: Vec<String>,
    },
    /// `source` is one of these (`LIVE`, `OFFLINE`, ...).
    Source(Vec<String>),
    SessionId(String),
    /// The completion was created by one of these users.
    CreatedBy(Vec<String>),
    CompletionId(String),
    /// The prompt hash is one of these.
    PromptHash(Vec<String>),
    /// `created_at` within the bounds, both inclusive, in milliseconds.
    CreatedAt {
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    },
    /// The completion has a direct score of the metric whose value satisfies every comparison
    /// and, when `reasons` is not empty, whose reason is one of them.
    Score {
        metric_id: String,
        comparisons: Vec<(NumericComparison, f64)>,
        reasons: Vec<String>,
    },
    Text {
        field: TextField,
        predicate: TextPredicate,
    },
    /// The completion took part in a comparison (preference) of the metric, on either side.
    Compared {
        metric_id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericComparison {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl NumericComparison {
    fn operator(self) -> &'static str {
        match self {
            NumericComparison::Eq => "=",
            NumericComparison::Neq => "<>",
            NumericComparison::Gt => ">",
            NumericComparison::Gte => ">=",
            NumericComparison::Lt => "<",
            NumericComparison::Lte => "<=",
        }
    }
}

/// The text a [`CompletionCondition::Text`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    /// The completion text; a completion without text never matches.
    Completion,
    /// The prompt: matches when the content of any of its chat messages does.
    Prompt,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TextPredicate {
    /// Exactly this text (case-sensitive).
    Equals(String),
    /// Contains this substring, ignoring the case of ASCII letters (and only of those, on
    /// both backends).
    Contains(String),
}

pub(crate) enum Arg {
    Text(String),
    Int(i64),
    Float(f64),
}

/// The SQL dialect differences a condition needs; everything else is common SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub(crate) fn from_backend_name(backend_name: &str) -> Self {
        if backend_name == "postgres" {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        }
    }

    /// `text` with ASCII letters lowercased and nothing else changed: SQLite's `LOWER` folds
    /// ASCII only, PostgreSQL's folds all of Unicode, so PostgreSQL translates instead.
    fn ascii_lowercase(self, text: &str) -> String {
        match self {
            Dialect::Sqlite => format!("LOWER({text})"),
            Dialect::Postgres => format!(
                "TRANSLATE({text}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
            ),
        }
    }

    /// The prompt's chat messages as a `FROM` item, and the expression of one message's
    /// content.
    fn prompt_messages(self) -> (&'static str, &'static str) {
        match self {
            Dialect::Sqlite => (
                "json_each(c.chat_messages) AS message",
                "json_extract(message.value, '$.content')",
            ),
            Dialect::Postgres => (
                "jsonb_array_elements(CAST(c.chat_messages AS jsonb)) AS message",
                "(message.value ->> 'content')",
            ),
        }
    }
}

const ALWAYS: &str = "1 = 1";
const NEVER: &str = "1 = 0";

/// A compiled filter: the `WHERE` clause and its arguments, numbered `$1..` in order.
pub(crate) struct WhereClause {
    sql: String,
    args: Vec<Arg>,
}

impl WhereClause {
    pub(crate) fn compile(filter: &CompletionFilter, dialect: Dialect) -> Self {
        let mut compiler = Compiler {
            args: Vec::new(),
            dialect,
        };
        let project = compiler.placeholder(Arg::Text(filter.project_id.clone()));
        let condition = compiler.condition(&filter.condition);
        Self {
            sql: format!("WHERE c.project_id = {project} AND ({condition})"),
            args: compiler.args,
        }
    }

    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }

    pub(crate) fn bind<'q>(
        &'q self,
        mut query: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>> {
        for arg in &self.args {
            query = match arg {
                Arg::Text(text) => query.bind(text.as_str()),
                Arg::Int(number) => query.bind(*number),
                Arg::Float(number) => query.bind(*number),
            };
        }
        query
    }
}

struct Compiler {
    args: Vec<Arg>,
    dialect: Dialect,
}

impl Compiler {
    fn placeholder(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    fn text(&mut self, value: &str) -> String {
        self.placeholder(Arg::Text(value.to_owned()))
    }

    /// `column IN (...)`, false for no values; `column` must be NOT NULL or guarded.
    fn one_of(&mut self, column: &str, values: &[String]) -> String {
        if values.is_empty() {
            return NEVER.to_owned();
        }
        let placeholders: Vec<String> = values.iter().map(|value| self.text(value)).collect();
        format!("{column} IN ({})", placeholders.join(", "))
    }

    /// `one_of` on a nullable column: false where it is NULL.
    fn nullable_one_of(&mut self, column: &str, values: &[String]) -> String {
        let membership = self.one_of(column, values);
        format!("({column} IS NOT NULL AND {membership})")
    }

    /// Case-sensitive substring test that both backends evaluate alike (`LIKE` folds ASCII
    /// case on SQLite only, so it cannot be used here).
    fn contains_exactly(&mut self, column: &str, needle: &str) -> String {
        let placeholder = self.text(needle);
        format!("REPLACE({column}, {placeholder}, '') <> {column}")
    }

    fn condition(&mut self, condition: &CompletionCondition) -> String {
        match condition {
            CompletionCondition::All(conditions) => self.junction(conditions, " AND ", ALWAYS),
            CompletionCondition::Any(conditions) => self.junction(conditions, " OR ", NEVER),
            CompletionCondition::Not(inner) => format!("NOT ({})", self.condition(inner)),
            CompletionCondition::Model(ids) => self.nullable_one_of("c.model_id", ids),
            CompletionCondition::LabelPresent { key } => {
                // Labels are stored as serde's JSON of `[Label]`: `{"key":..,"value":..}`.
                let key_json = serde_json::to_string(key).unwrap_or_default();
                self.contains_exactly("c.labels", &format!("{{\"key\":{key_json},\"value\":"))
            }
            CompletionCondition::Label { key, values } => {
                let pairs: Vec<String> = values
                    .iter()
                    .map(|value| {
                        let pair = serde_json::to_string(&Label {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .unwrap_or_default();
                        self.contains_exactly("c.labels", &pair)
                    })
                    .collect();
                if pairs.is_empty() {
                    return NEVER.to_owned();
                }
                format!("({})", pairs.join(" OR "))
            }
            CompletionCondition::Source(sources) => self.one_of("c.source", sources),
            CompletionCondition::SessionId(session_id) => {
                self.nullable_one_of("c.session_id", std::slice::from_ref(session_id))
            }
            CompletionCondition::CreatedBy(users) => self.nullable_one_of("c.created_by", users),
            CompletionCondition::CompletionId(id) => {
                let placeholder = self.text(id);
                format!("c.id = {placeholder}")
            }
            CompletionCondition::PromptHash(hashes) => self.one_of("c.prompt_hash", hashes),
            CompletionCondition::CreatedAt { from_ms, to_ms } => {
                let mut bounds = Vec::new();
                if let Some(from_ms) = from_ms {
                    let placeholder = self.placeholder(Arg::Int(*from_ms));
                    bounds.push(format!("c.created_at >= {placeholder}"));
                }
                if let Some(to_ms) = to_ms {
                    let placeholder = self.placeholder(Arg::Int(*to_ms));
                    bounds.push(format!("c.created_at <= {placeholder}"));
                }
                if bounds.is_empty() {
                    return ALWAYS.to_owned();
                }
                format!("({})", bounds.join(" AND "))
            }
            CompletionCondition::Score {
                metric_id,
                comparisons,
                reasons,
            } => {
                let metric = self.text(metric_id);
                let mut clauses = vec![
                    "score.completion_id = c.id".to_owned(),
                    format!("score.metric_id = {metric}"),
                ];
                for (comparison, value) in comparisons {
                    let placeholder = self.placeholder(Arg::Float(*value));
                    clauses.push(format!(
                        "score.value {} {placeholder}",
                        comparison.operator()
                    ));
                }
                if !reasons.is_empty() {
                    clauses.push(self.nullable_one_of("score.reason", reasons));
                }
                format!(
                    "EXISTS (SELECT 1 FROM scores score WHERE {})",
                    clauses.join(" AND ")
                )
            }
            CompletionCondition::Text { field, predicate } => {
                self.text_condition(*field, predicate)
            }
            CompletionCondition::Compared { metric_id } => {
                let metric = self.text(metric_id);
                format!(
                    "EXISTS (SELECT 1 FROM comparisons comparison WHERE comparison.metric_id = {metric} \
                     AND (comparison.preferred_completion_id = c.id OR comparison.other_completion_id = c.id))"
                )
            }
        }
    }

    fn junction(
        &mut self,
        conditions: &[CompletionCondition],
        separator: &str,
        empty: &str,
    ) -> String {
        if conditions.is_empty() {
            return empty.to_owned();
        }
        let parts: Vec<String> = conditions
            .iter()
            .map(|condition| format!("({})", self.condition(condition)))
            .collect();
        parts.join(separator)
    }

    fn text_condition(&mut self, field: TextField, predicate: &TextPredicate) -> String {
        let (messages, message_content) = self.dialect.prompt_messages();
        let column = match field {
            TextField::Completion => "c.completion",
            TextField::Prompt => message_content,
        };
        let test = match predicate {
            TextPredicate::Equals(text) => {
                let placeholder = self.text(text);
                format!("{column} = {placeholder}")
            }
            TextPredicate::Contains(text) => {
                let pattern = format!("%{}%", escape_like(&text.to_ascii_lowercase()));
                let placeholder = self.text(&pattern);
                let folded = self.dialect.ascii_lowercase(column);
                format!("{folded} LIKE {placeholder} ESCAPE '\\'")
            }
        };
        let guarded = format!("({column} IS NOT NULL AND {test})");
        match field {
            TextField::Completion => guarded,
            TextField::Prompt => format!("EXISTS (SELECT 1 FROM {messages} WHERE {guarded})"),
        }
    }
}

/// Escape `LIKE`'s wildcards (and the escape character) so the text matches literally.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_values_travel_as_arguments() {
        let filter = CompletionFilter::project("p").and(CompletionCondition::Any(vec![
            CompletionCondition::Text {
                field: TextField::Completion,
                predicate: TextPredicate::Contains("50%_off' OR 1=1".to_owned()),
            },
            CompletionCondition::Not(Box::new(CompletionCondition::Model(vec!["m".to_owned()]))),
        ]));
        let clause = WhereClause::compile(&filter, Dialect::Sqlite);
        assert!(!clause.sql().contains("50"), "{}", clause.sql());
        assert!(!clause.sql().contains("'m'"), "{}", clause.sql());
        assert_eq!(clause.args.len(), 3);
        let Arg::Text(pattern) = &clause.args[1] else {
            panic!("pattern is text");
        };
        assert_eq!(pattern, "%50\\%\\_off' or 1=1%");
    }

    #[test]
    fn empty_junctions_are_constants() {
        let never = WhereClause::compile(
            &CompletionFilter::project("p").and(CompletionCondition::Any(Vec::new())),
            Dialect::Postgres,
        );
        assert!(never.sql().contains(NEVER), "{}", never.sql());
        let always = WhereClause::compile(&CompletionFilter::project("p"), Dialect::Postgres);
        assert!(always.sql().contains(ALWAYS), "{}", always.sql());
    }
}
