//! Kubernetes label selectors: one parsed type for every place that picks
//! objects by their labels (API `labelSelector` filtering, Service →
//! endpoints, ReplicaSet ownership, scheduler `nodeSelector`).
//!
//! A [`Selector`] is a conjunction of [`Requirement`]s. It is built from
//! - the kubectl `-l` / `?labelSelector=` string form ([`Selector::parse`]),
//! - a `metav1.LabelSelector` (`matchLabels` + `matchExpressions`,
//!   [`Selector::from_label_selector`]),
//! - a plain label map such as a Service's `spec.selector` or a Pod's
//!   `nodeSelector` ([`Selector::from_map`]).
//!
//! "Matches everything" and "matches nothing" are different things and
//! Kubernetes uses both:
//! - an empty selector ([`Selector::everything`], the empty string, an empty
//!   `LabelSelector {}` or an empty map) matches **every** label set;
//! - an *absent* selector matches **nothing**: a ReplicaSet or Deployment
//!   with no `spec.selector`, or a Service with no `spec.selector` (whose
//!   endpoints are then managed by hand). This type has no "nothing" value;
//!   call sites keep `Option<Selector>` and treat `None` as matching nothing.
//!   Services are stricter still: an empty `spec.selector` map also means
//!   "no managed endpoints", which is the endpoint controller's business.
//!
//! The canonical string form ([`Display`](fmt::Display)) sorts requirements
//! by key then operator, writes `=` for equality and sorted value sets, so
//! `Selector::parse(&s.to_string()) == Ok(s)` for every selector.
//!
//! The numeric `>`/`<` operators of Kubernetes' parser (used only by node
//! affinity) are not supported: they are rejected with a syntax error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Longest label name (the part after an optional `prefix/`) and value.
const MAX_NAME_LEN: usize = 63;
/// Longest DNS subdomain, which is what a key prefix must be.
const MAX_PREFIX_LEN: usize = 253;

/// Why a label key or value is not valid Kubernetes label syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelSyntaxError {
    /// A key, or the name part of a key, is empty.
    #[error("must not be empty")]
    Empty,
    /// Longer than allowed.
    #[error("must be at most {max} characters, is {len}")]
    TooLong {
        /// Actual length in bytes.
        len: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// The name or value part is not `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
    #[error(
        "must consist of alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character"
    )]
    BadName,
    /// The prefix before `/` is not a lowercase DNS subdomain.
    #[error(
        "prefix {prefix:?} must be a lowercase DNS subdomain (alphanumerics, '-' and '.', starting and ending with an alphanumeric)"
    )]
    BadPrefix {
        /// The offending prefix.
        prefix: String,
    },
}

/// A selector that could not be parsed or built.
///
/// `position` fields are byte offsets into the string given to
/// [`Selector::parse`]; they are `None` when the selector came from a
/// `LabelSelector` or a map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The string does not follow the selector grammar.
    #[error("label selector: unexpected {found} at position {position}, expected {expected}")]
    Syntax {
        /// Byte offset of the offending token.
        position: usize,
        /// The offending token, quoted, or "end of input".
        found: String,
        /// What the parser expected there.
        expected: &'static str,
    },
    /// A label key is not valid.
    #[error("label selector: invalid key {key:?}{}: {reason}", at(*position))]
    InvalidKey {
        /// The offending key.
        key: String,
        /// Byte offset of the key in the parsed string.
        position: Option<usize>,
        /// What is wrong with it.
        reason: LabelSyntaxError,
    },
    /// A label value is not valid.
    #[error("label selector: invalid value {value:?} for key {key:?}{}: {reason}", at(*position))]
    InvalidValue {
        /// Key the value belongs to.
        key: String,
        /// The offending value.
        value: String,
        /// Byte offset of the value in the parsed string.
        position: Option<usize>,
        /// What is wrong with it.
        reason: LabelSyntaxError,
    },
    /// `In`/`NotIn` with no values.
    #[error("label selector: operator {operator} on key {key:?} needs at least one value{}", at(*position))]
    MissingValues {
        /// Key of the requirement.
        key: String,
        /// `in`/`notin` as written.
        operator: String,
        /// Byte offset of the requirement in the parsed string.
        position: Option<usize>,
    },
    /// `Exists`/`DoesNotExist` with values, or `=`/`!=` with more than one.
    #[error(
        "label selector: operator {operator} on key {key:?} takes {allowed} value(s), got {count}"
    )]
    WrongValueCount {
        /// Key of the requirement.
        key: String,
        /// Operator as written.
        operator: String,
        /// How many values the operator takes.
        allowed: usize,
        /// How many were given.
        count: usize,
    },
    /// A `matchExpressions` operator other than In, NotIn, Exists, DoesNotExist.
    #[error(
        "label selector: unknown operator {operator:?} on key {key:?} (expected In, NotIn, Exists or DoesNotExist)"
    )]
    UnknownOperator {
        /// Key of the requirement.
        key: String,
        /// The operator as given.
        operator: String,
    },
}

fn at(position: Option<usize>) -> String {
    position.map_or_else(String::new, |p| format!(" at position {p}"))
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 characters.
///
/// # Errors
/// Returns what is wrong with the key.
pub fn validate_label_key(key: &str) -> Result<(), LabelSyntaxError> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            validate_prefix(prefix)?;
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err(LabelSyntaxError::Empty);
    }
    validate_name(name)
}

/// Checks a label value: empty, or at most 63 characters of
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
///
/// # Errors
/// Returns what is wrong with the value.
pub fn validate_label_value(value: &str) -> Result<(), LabelSyntaxError> {
    if value.is_empty() {
        return Ok(());
    }
    validate_name(value)
}

fn validate_name(name: &str) -> Result<(), LabelSyntaxError> {
    if name.len() > MAX_NAME_LEN {
        return Err(LabelSyntaxError::TooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if inner_ok && edge_ok(bytes.first()) && edge_ok(bytes.last()) {
        Ok(())
    } else {
        Err(LabelSyntaxError::BadName)
    }
}

fn validate_prefix(prefix: &str) -> Result<(), LabelSyntaxError> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(LabelSyntaxError::TooLong {
            len: prefix.len(),
            max: MAX_PREFIX_LEN,
        });
    }
    let bad = || LabelSyntaxError::BadPrefix {
        prefix: prefix.to_owned(),
    };
    if prefix.is_empty() {
        return Err(bad());
    }
    // A DNS subdomain: dot-separated DNS-1123 labels.
    for label in prefix.split('.') {
        let bytes = label.as_bytes();
        let edge_ok =
            |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let inner_ok = bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if label.len() > MAX_NAME_LEN
            || !inner_ok
            || !edge_ok(bytes.first())
            || !edge_ok(bytes.last())
        {
            return Err(bad());
        }
    }
    Ok(())
}

/// How a [`Requirement`] constrains its key.
///
/// Ordering (used for the canonical form) follows declaration order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// The key is present with exactly this value (`a=b`, `a==b`, matchLabels).
    Equals(String),
    /// The key is absent or has another value (`a!=b`).
    NotEquals(String),
    /// The key is present with one of these values (`a in (x,y)`). Never empty.
    In(BTreeSet<String>),
    /// The key is absent or has none of these values (`a notin (x)`). Never empty.
    NotIn(BTreeSet<String>),
    /// The key is present, any value (`a`).
    Exists,
    /// The key is absent (`!a`).
    DoesNotExist,
}

/// One condition on one label key. Built only through [`Requirement::new`],
/// so its key and values are always valid label syntax.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
}

impl Requirement {
    /// Builds a requirement, checking the key and value syntax and that
    /// `In`/`NotIn` carry at least one value.
    ///
    /// # Errors
    /// [`SelectorError::InvalidKey`], [`SelectorError::InvalidValue`] or
    /// [`SelectorError::MissingValues`] (all without a position).
    pub fn new(key: impl Into<String>, operator: Operator) -> Result<Self, SelectorError> {
        let key = key.into();
        validate_label_key(&key).map_err(|reason| SelectorError::InvalidKey {
            key: key.clone(),
            position: None,
            reason,
        })?;
        let check_value = |value: &String| {
            validate_label_value(value).map_err(|reason| SelectorError::InvalidValue {
                key: key.clone(),
                value: value.clone(),
                position: None,
                reason,
            })
        };
        match &operator {
            Operator::Equals(v) | Operator::NotEquals(v) => check_value(v)?,
            Operator::In(values) | Operator::NotIn(values) => {
                if values.is_empty() {
                    return Err(SelectorError::MissingValues {
                        key,
                        operator: operator.keyword().to_owned(),
                        position: None,
                    });
                }
                values.iter().try_for_each(check_value)?;
            }
            Operator::Exists | Operator::DoesNotExist => {}
        }
        Ok(Self { key, operator })
    }

    /// The label key this requirement looks at.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How it constrains the key.
    pub fn operator(&self) -> &Operator {
        &self.operator
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            Operator::Equals(v) => value == Some(v),
            Operator::NotEquals(v) => value != Some(v),
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl Operator {
    fn keyword(&self) -> &'static str {
        match self {
            Operator::Equals(_) => "=",
            Operator::NotEquals(_) => "!=",
            Operator::In(_) => "in",
            Operator::NotIn(_) => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let set = |f: &mut fmt::Formatter<'_>, kw: &str, values: &BTreeSet<String>| {
            // A set holding only the empty value would print as "()", which
            // reads back as "no values"; "(,)" reads back as {""}.
            if values.len() == 1 && values.contains("") {
                return write!(f, "{key} {kw} (,)");
            }
            write!(f, "{key} {kw} (")?;
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                f.write_str(v)?;
            }
            f.write_str(")")
        };
        match &self.operator {
            Operator::Equals(v) => write!(f, "{key}={v}"),
            Operator::NotEquals(v) => write!(f, "{key}!={v}"),
            Operator::In(values) => set(f, "in", values),
            Operator::NotIn(values) => set(f, "notin", values),
            Operator::Exists => f.write_str(key),
            Operator::DoesNotExist => write!(f, "!{key}"),
        }
    }
}

/// A parsed label selector: a conjunction of [`Requirement`]s kept in
/// canonical order (sorted, duplicates removed).
///
/// The empty selector matches every label set; see the module docs for
/// how "matches nothing" is represented.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every label set.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether this selector has no requirements (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Builds a selector from requirements, putting them in canonical order.
    pub fn from_requirements(requirements: impl IntoIterator<Item = Requirement>) -> Self {
        let mut requirements: Vec<Requirement> = requirements.into_iter().collect();
        requirements.sort();
        requirements.dedup();
        Self { requirements }
    }

    /// The requirements, in canonical order.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// An equality selector from a label map: every `k: v` becomes `k=v`.
    /// This is how a Service's `spec.selector` and a Pod's `nodeSelector`
    /// select. An empty map gives [`Selector::everything`].
    ///
    /// # Errors
    /// [`SelectorError::InvalidKey`] / [`SelectorError::InvalidValue`] when
    /// a key or value is not valid label syntax.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        let requirements = map
            .iter()
            .map(|(k, v)| Requirement::new(k.clone(), Operator::Equals(v.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_requirements(requirements))
    }

    /// Converts a `metav1.LabelSelector` with Kubernetes' rules: every
    /// `matchLabels` entry is an equality; `matchExpressions` operators are
    /// `In`/`NotIn` (at least one value) and `Exists`/`DoesNotExist` (no
    /// values). An empty `LabelSelector {}` matches everything; an absent
    /// one (`Option::None` at the call site) matches nothing.
    ///
    /// # Errors
    /// Invalid keys or values, an unknown operator, or a value count the
    /// operator does not allow.
    pub fn from_label_selector(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(k.clone(), Operator::Equals(v.clone()))?);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let values = expr.values.as_deref().unwrap_or_default();
            let no_values = |operator: Operator| {
                if values.is_empty() {
                    Ok(operator)
                } else {
                    Err(SelectorError::WrongValueCount {
                        key: expr.key.clone(),
                        operator: expr.operator.clone(),
                        allowed: 0,
                        count: values.len(),
                    })
                }
            };
            let set = || values.iter().cloned().collect::<BTreeSet<_>>();
            let operator = match expr.operator.as_str() {
                "In" => Operator::In(set()),
                "NotIn" => Operator::NotIn(set()),
                "Exists" => no_values(Operator::Exists)?,
                "DoesNotExist" => no_values(Operator::DoesNotExist)?,
                other => {
                    return Err(SelectorError::UnknownOperator {
                        key: expr.key.clone(),
                        operator: other.to_owned(),
                    });
                }
            };
            let requirement =
                Requirement::new(expr.key.clone(), operator).map_err(|e| match e {
                    // Name the operator as the user wrote it.
                    SelectorError::MissingValues { key, position, .. } => {
                        SelectorError::MissingValues {
                            key,
                            operator: expr.operator.clone(),
                            position,
                        }
                    }
                    other => other,
                })?;
            requirements.push(requirement);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// Parses the kubectl `-l` / API `labelSelector` string form:
    /// comma-separated `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (z)`,
    /// `a` (exists) and `!a` (does not exist), whitespace between tokens
    /// ignored. The empty string (or only whitespace) is
    /// [`Selector::everything`].
    ///
    /// # Errors
    /// A [`SelectorError`] naming the offending token and its byte offset.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Parser::new(input).selector()
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// [`Selector::matches`] for an object's optional `metadata.labels`
    /// (absent labels are the empty set).
    pub fn matches_opt(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        match labels {
            Some(labels) => self.matches(labels),
            None => self.matches(&BTreeMap::new()),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            fmt::Display::fmt(r, f)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Tokens of the selector grammar (Kubernetes' lexer: identifiers run until
/// whitespace or one of `!=,()<>`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    OpenParen,
    CloseParen,
    Comma,
    /// `<` or `>`: lexed so the error can name them, never accepted.
    Compare(&'a str),
    End,
}

impl Token<'_> {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("{s:?}"),
            Token::Bang => "\"!\"".into(),
            Token::Eq => "\"=\"".into(),
            Token::DoubleEq => "\"==\"".into(),
            Token::NotEq => "\"!=\"".into(),
            Token::OpenParen => "\"(\"".into(),
            Token::CloseParen => "\")\"".into(),
            Token::Comma => "\",\"".into(),
            Token::Compare(s) => format!("{s:?} (numeric comparison is not supported)"),
            Token::End => "end of input".into(),
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    /// One token of lookahead with its start offset.
    peeked: Option<(usize, Token<'a>)>,
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | ',' | '(' | ')' | '<' | '>')
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self {
            input,
            pos: 0,
            peeked: None,
        }
    }

    fn lex(&mut self) -> (usize, Token<'a>) {
        let rest = &self.input[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let start = self.pos;
        let mut chars = trimmed.chars();
        let Some(c) = chars.next() else {
            return (start, Token::End);
        };
        let next = chars.next();
        let (len, token) = match (c, next) {
            ('!', Some('=')) => (2, Token::NotEq),
            ('!', _) => (1, Token::Bang),
            ('=', Some('=')) => (2, Token::DoubleEq),
            ('=', _) => (1, Token::Eq),
            (',', _) => (1, Token::Comma),
            ('(', _) => (1, Token::OpenParen),
            (')', _) => (1, Token::CloseParen),
            ('<' | '>', _) => (1, Token::Compare(&trimmed[..1])),
            _ => {
                let len = trimmed
                    .find(|c: char| c.is_whitespace() || is_special(c))
                    .unwrap_or(trimmed.len());
                (len, Token::Ident(&trimmed[..len]))
            }
        };
        self.pos += len;
        (start, token)
    }

    fn peek(&mut self) -> (usize, Token<'a>) {
        if let Some(t) = &self.peeked {
            return t.clone();
        }
        let t = self.lex();
        self.peeked = Some(t.clone());
        t
    }

    fn next(&mut self) -> (usize, Token<'a>) {
        match self.peeked.take() {
            Some(t) => t,
            None => self.lex(),
        }
    }

    fn syntax(position: usize, found: &Token<'_>, expected: &'static str) -> SelectorError {
        SelectorError::Syntax {
            position,
            found: found.describe(),
            expected,
        }
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek().1 == Token::End {
            return Ok(Selector::everything());
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                (_, Token::End) => break,
                (_, Token::Comma) => {}
                (p, t) => return Err(Self::syntax(p, &t, "\",\" or end of input")),
            }
        }
        Ok(Selector::from_requirements(requirements))
    }

    fn key(&mut self) -> Result<(usize, &'a str), SelectorError> {
        match self.next() {
            (p, Token::Ident(key)) => {
                validate_label_key(key).map_err(|reason| SelectorError::InvalidKey {
                    key: key.to_owned(),
                    position: Some(p),
                    reason,
                })?;
                Ok((p, key))
            }
            (p, t) => Err(Self::syntax(p, &t, "a label key")),
        }
    }

    fn value(&self, key: &str, position: usize, value: &str) -> Result<String, SelectorError> {
        validate_label_value(value).map_err(|reason| SelectorError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            position: Some(position),
            reason,
        })?;
        Ok(value.to_owned())
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if let (_, Token::Bang) = self.peek() {
            self.next();
            let (_, key) = self.key()?;
            return Ok(Requirement {
                key: key.to_owned(),
                operator: Operator::DoesNotExist,
            });
        }
        let (key_pos, key) = self.key()?;
        let operator = match self.peek() {
            (_, Token::End | Token::Comma) => Operator::Exists,
            (_, Token::Eq | Token::DoubleEq) => {
                self.next();
                Operator::Equals(self.exact_value(key)?)
            }
            (_, Token::NotEq) => {
                self.next();
                Operator::NotEquals(self.exact_value(key)?)
            }
            (_, Token::Ident("in")) => {
                self.next();
                Operator::In(self.value_set(key, key_pos, "in")?)
            }
            (_, Token::Ident("notin")) => {
                self.next();
                Operator::NotIn(self.value_set(key, key_pos, "notin")?)
            }
            (p, t) => {
                return Err(Self::syntax(
                    p,
                    &t,
                    "\"=\", \"==\", \"!=\", \"in\", \"notin\", \",\" or end of input",
                ));
            }
        };
        Ok(Requirement {
            key: key.to_owned(),
            operator,
        })
    }

    /// The value after `=`, `==` or `!=`; empty when followed by `,` or the end.
    fn exact_value(&mut self, key: &str) -> Result<String, SelectorError> {
        match self.peek() {
            (_, Token::End | Token::Comma) => Ok(String::new()),
            (p, Token::Ident(v)) => {
                self.next();
                self.value(key, p, v)
            }
            (p, t) => Err(Self::syntax(p, &t, "a label value")),
        }
    }

    /// `( v1, v2, ... )`; an empty entry between commas is the empty value.
    fn value_set(
        &mut self,
        key: &str,
        key_pos: usize,
        keyword: &str,
    ) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            (_, Token::OpenParen) => {}
            (p, t) => return Err(Self::syntax(p, &t, "\"(\"")),
        }
        let mut values = BTreeSet::new();
        if let (_, Token::CloseParen) = self.peek() {
            self.next();
            return Err(SelectorError::MissingValues {
                key: key.to_owned(),
                operator: keyword.to_owned(),
                position: Some(key_pos),
            });
        }
        loop {
            match self.peek() {
                (p, Token::Ident(v)) => {
                    self.next();
                    values.insert(self.value(key, p, v)?);
                }
                (_, Token::Comma | Token::CloseParen) => {
                    values.insert(String::new());
                }
                (p, t) => return Err(Self::syntax(p, &t, "a label value, \",\" or \")\"")),
            }
            match self.next() {
                (_, Token::Comma) => {}
                (_, Token::CloseParen) => return Ok(values),
                (p, t) => return Err(Self::syntax(p, &t, "\",\" or \")\"")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn req(key: &str, operator: Operator) -> Requirement {
        Requirement::new(key, operator).unwrap()
    }

    #[test]
    fn parses_every_operator() {
        let s = Selector::parse("a=b, c==d,e!=f, g in (x, y) ,h notin (z),i,!j").unwrap();
        assert_eq!(
            s,
            Selector::from_requirements([
                req("a", Operator::Equals("b".into())),
                req("c", Operator::Equals("d".into())),
                req("e", Operator::NotEquals("f".into())),
                req("g", Operator::In(set(&["x", "y"]))),
                req("h", Operator::NotIn(set(&["z"]))),
                req("i", Operator::Exists),
                req("j", Operator::DoesNotExist),
            ])
        );
        assert_eq!(s.to_string(), "a=b,c=d,e!=f,g in (x,y),h notin (z),i,!j");
    }

    #[test]
    fn empty_and_whitespace_select_everything() {
        assert_eq!(Selector::parse("").unwrap(), Selector::everything());
        assert_eq!(Selector::parse("  \t ").unwrap(), Selector::everything());
        assert!(Selector::everything().is_empty());
        assert!(Selector::everything().matches(&BTreeMap::new()));
        assert!(Selector::everything().matches(&labels(&[("a", "b")])));
        assert_eq!(Selector::everything().to_string(), "");
    }

    #[test]
    fn empty_values() {
        let s = Selector::parse("a=,b!=").unwrap();
        assert_eq!(
            s.requirements(),
            &[
                req("a", Operator::Equals(String::new())),
                req("b", Operator::NotEquals(String::new()))
            ]
        );
        assert_eq!(s.to_string(), "a=,b!=");
        let s = Selector::parse("a in (,x)").unwrap();
        assert_eq!(s.requirements(), &[req("a", Operator::In(set(&["", "x"])))]);
        // Only-the-empty-value must survive the round trip.
        let only_empty = Selector::from_requirements([req("a", Operator::In(set(&[""])))]);
        assert_eq!(only_empty.to_string(), "a in (,)");
        assert_eq!(
            Selector::parse(&only_empty.to_string()).unwrap(),
            only_empty
        );
    }

    #[test]
    fn matching_semantics() {
        let with = |pairs: &[(&str, &str)], sel: &str| {
            Selector::parse(sel).unwrap().matches(&labels(pairs))
        };
        let app_web = [("app", "web"), ("tier", "front")];
        assert!(with(&app_web, "app=web"));
        assert!(!with(&app_web, "app=db"));
        assert!(with(&app_web, "app=web,tier=front"));
        assert!(!with(&app_web, "app=web,tier=back"));
        // != and notin match when the key is absent.
        assert!(with(&app_web, "env!=prod"));
        assert!(with(&app_web, "env notin (prod)"));
        assert!(!with(&app_web, "app!=web"));
        assert!(!with(&app_web, "app notin (web,db)"));
        assert!(with(&app_web, "app in (db,web)"));
        assert!(!with(&app_web, "env in (prod)"));
        assert!(with(&app_web, "app"));
        assert!(!with(&app_web, "env"));
        assert!(with(&app_web, "!env"));
        assert!(!with(&app_web, "!app"));
        // "a=" selects the empty value, not absence.
        assert!(with(&[("a", "")], "a="));
        assert!(!with(&[], "a="));
    }

    #[test]
    fn prefixed_keys() {
        let s =
            Selector::parse("app.kubernetes.io/name=web,!node-role.kubernetes.io/control-plane")
                .unwrap();
        assert!(s.matches(&labels(&[("app.kubernetes.io/name", "web")])));
        assert!(!s.matches(&labels(&[
            ("app.kubernetes.io/name", "web"),
            ("node-role.kubernetes.io/control-plane", "")
        ])));
    }

    #[test]
    fn canonical_order_and_dedup() {
        let a = Selector::parse("b=1,a,b=1").unwrap();
        let b = Selector::parse("a,b==1").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "a,b=1");
    }

    #[test]
    fn syntax_errors_name_token_and_position() {
        assert_eq!(
            Selector::parse("a=b c").unwrap_err(),
            SelectorError::Syntax {
                position: 4,
                found: "\"c\"".into(),
                expected: "\",\" or end of input"
            }
        );
        assert!(matches!(
            Selector::parse("a in x").unwrap_err(),
            SelectorError::Syntax { position: 5, .. }
        ));
        assert!(matches!(
            Selector::parse("a in (x").unwrap_err(),
            SelectorError::Syntax { position: 7, ref found, .. } if found == "end of input"
        ));
        assert!(matches!(
            Selector::parse("a,,b").unwrap_err(),
            SelectorError::Syntax { position: 2, .. }
        ));
        assert!(matches!(
            Selector::parse("a>5").unwrap_err(),
            SelectorError::Syntax { position: 1, ref found, .. } if found.contains("not supported")
        ));
        assert!(matches!(
            Selector::parse("a=b,").unwrap_err(),
            SelectorError::Syntax { position: 4, .. }
        ));
        assert!(matches!(
            Selector::parse("a foo").unwrap_err(),
            SelectorError::Syntax { position: 2, .. }
        ));
        assert!(matches!(
            Selector::parse("a=(b)").unwrap_err(),
            SelectorError::Syntax { position: 2, .. }
        ));
        assert_eq!(
            Selector::parse("x, a notin ()").unwrap_err(),
            SelectorError::MissingValues {
                key: "a".into(),
                operator: "notin".into(),
                position: Some(3)
            }
        );
        let msg = Selector::parse("a=b c").unwrap_err().to_string();
        assert!(msg.contains("\"c\"") && msg.contains("position 4"), "{msg}");
    }

    #[test]
    fn key_and_value_validation() {
        assert!(matches!(
            Selector::parse("a=-bad").unwrap_err(),
            SelectorError::InvalidValue {
                position: Some(2),
                reason: LabelSyntaxError::BadName,
                ..
            }
        ));
        let long = "x".repeat(64);
        assert!(matches!(
            Selector::parse(&format!("{long}=1")).unwrap_err(),
            SelectorError::InvalidKey {
                position: Some(0),
                reason: LabelSyntaxError::TooLong { len: 64, max: 63 },
                ..
            }
        ));
        assert!(matches!(
            Selector::parse(&format!("a={long}")).unwrap_err(),
            SelectorError::InvalidValue {
                reason: LabelSyntaxError::TooLong { .. },
                ..
            }
        ));
        assert!(matches!(
            Selector::parse("Example.com/a=1").unwrap_err(),
            SelectorError::InvalidKey {
                reason: LabelSyntaxError::BadPrefix { .. },
                ..
            }
        ));
        assert!(matches!(
            Selector::parse("example.com/=1").unwrap_err(),
            SelectorError::InvalidKey {
                reason: LabelSyntaxError::Empty,
                ..
            }
        ));
        assert!(matches!(
            Selector::parse("/a").unwrap_err(),
            SelectorError::InvalidKey {
                reason: LabelSyntaxError::BadPrefix { .. },
                ..
            }
        ));
        assert!(matches!(
            Selector::parse("a/b/c").unwrap_err(),
            SelectorError::InvalidKey {
                reason: LabelSyntaxError::BadName,
                ..
            }
        ));
        assert!(validate_label_key(&"x".repeat(63)).is_ok());
        assert!(validate_label_value("A-b_c.9").is_ok());
        assert!(validate_label_value("").is_ok());
        assert_eq!(validate_label_value("a b"), Err(LabelSyntaxError::BadName));
        assert_eq!(validate_label_value("a."), Err(LabelSyntaxError::BadName));
    }

    #[test]
    fn from_map_is_equality() {
        let m = labels(&[("app", "web"), ("tier", "front")]);
        let s = Selector::from_map(&m).unwrap();
        assert_eq!(s.to_string(), "app=web,tier=front");
        assert!(s.matches(&m));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(Selector::from_map(&BTreeMap::new()).unwrap().is_empty());
        assert!(matches!(
            Selector::from_map(&labels(&[("a", "b c")])).unwrap_err(),
            SelectorError::InvalidValue { position: None, .. }
        ));
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn from_label_selector_rules() {
        let ls = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", Some(&["front", "edge"])),
                expr("env", "NotIn", Some(&["prod"])),
                expr("canary", "DoesNotExist", None),
                expr("team", "Exists", Some(&[])),
            ]),
        };
        let s = Selector::from_label_selector(&ls).unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,!canary,env notin (prod),team,tier in (edge,front)"
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "edge"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "edge")])));

        assert!(
            Selector::from_label_selector(&LabelSelector::default())
                .unwrap()
                .is_empty()
        );

        let bad = |e: LabelSelectorRequirement| {
            Selector::from_label_selector(&LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![e]),
            })
            .unwrap_err()
        };
        assert_eq!(
            bad(expr("a", "In", Some(&[]))),
            SelectorError::MissingValues {
                key: "a".into(),
                operator: "In".into(),
                position: None
            }
        );
        assert!(matches!(
            bad(expr("a", "NotIn", None)),
            SelectorError::MissingValues { .. }
        ));
        assert!(matches!(
            bad(expr("a", "Exists", Some(&["x"]))),
            SelectorError::WrongValueCount {
                allowed: 0,
                count: 1,
                ..
            }
        ));
        assert!(matches!(
            bad(expr("a", "DoesNotExist", Some(&["x"]))),
            SelectorError::WrongValueCount { .. }
        ));
        assert!(matches!(
            bad(expr("a", "Gt", Some(&["1"]))),
            SelectorError::UnknownOperator { .. }
        ));
        assert!(matches!(
            bad(expr("a", "in", Some(&["1"]))),
            SelectorError::UnknownOperator { .. }
        ));
        assert!(matches!(
            bad(expr("a b", "Exists", None)),
            SelectorError::InvalidKey { .. }
        ));
        assert!(matches!(
            bad(expr("a", "In", Some(&["x y"]))),
            SelectorError::InvalidValue { .. }
        ));
    }

    #[test]
    fn requirement_new_rejects_empty_sets() {
        assert!(matches!(
            Requirement::new("a", Operator::In(BTreeSet::new())),
            Err(SelectorError::MissingValues { .. })
        ));
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9]",
            "[a-zA-Z0-9][-a-zA-Z0-9_.]{0,20}[a-zA-Z0-9]",
            Just("in".to_owned()),
            Just("notin".to_owned()),
        ]
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        (
            proptest::option::of(
                "[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?){0,2}",
            ),
            name_strategy(),
        )
            .prop_map(|(prefix, name)| match prefix {
                Some(p) => format!("{p}/{name}"),
                None => name,
            })
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), name_strategy()]
    }

    fn operator_strategy() -> impl Strategy<Value = Operator> {
        let values = || proptest::collection::btree_set(value_strategy(), 1..4);
        prop_oneof![
            value_strategy().prop_map(Operator::Equals),
            value_strategy().prop_map(Operator::NotEquals),
            values().prop_map(Operator::In),
            values().prop_map(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
        ]
    }

    fn selector_strategy() -> impl Strategy<Value = Selector> {
        proptest::collection::vec((key_strategy(), operator_strategy()), 0..6).prop_map(|reqs| {
            Selector::from_requirements(reqs.into_iter().map(|(k, op)| req(&k, op)))
        })
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(s in selector_strategy()) {
            let text = s.to_string();
            prop_assert_eq!(Selector::parse(&text), Ok(s.clone()), "text: {}", text);
        }

        #[test]
        fn set_and_equality_forms_agree(
            key in key_strategy(),
            value in value_strategy(),
            l in proptest::collection::btree_map(key_strategy(), value_strategy(), 0..6),
        ) {
            // Pick the key up sometimes so both branches get exercised.
            let mut l = l;
            if value.len() % 2 == 0 {
                l.insert(key.clone(), value.clone());
            }
            let one = |op: Operator| req(&key, op).matches(&l);
            let single = BTreeSet::from([value.clone()]);
            prop_assert_eq!(one(Operator::In(single.clone())), one(Operator::Equals(value.clone())));
            prop_assert_eq!(one(Operator::NotIn(single.clone())), one(Operator::NotEquals(value.clone())));
            prop_assert_eq!(one(Operator::In(single.clone())), !one(Operator::NotIn(single)));
            prop_assert_eq!(one(Operator::Exists), !one(Operator::DoesNotExist));
            prop_assert_eq!(one(Operator::Equals(value.clone())), !one(Operator::NotEquals(value.clone())));
        }

        #[test]
        fn from_map_matches_itself(m in proptest::collection::btree_map(key_strategy(), value_strategy(), 0..6)) {
            let s = Selector::from_map(&m).unwrap();
            prop_assert!(s.matches(&m));
            prop_assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
        }

        #[test]
        fn parse_never_panics(input in "[-a-z0-9=!,() /.<>]{0,30}") {
            let _ = Selector::parse(&input);
        }
    }
}
