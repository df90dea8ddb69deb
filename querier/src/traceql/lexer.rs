//! TraceQL tokens, each with its byte offset for error messages.

use super::ParseError;
use super::ast::{Attribute, AttributeScope};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Pipe,
    Comma,
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Regex,
    NotRegex,
    AndAnd,
    OrOr,
    Not,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    Descendant,
    Ancestor,
    Tilde,
    /// `&>`, `&<`, `&>>`, `&<<`, `&~`
    UnionChild,
    UnionParent,
    UnionDescendant,
    UnionAncestor,
    UnionSibling,
    Str(String),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    Ident(String),
    /// `span:name`, `trace:duration`, …
    Scoped(String, String),
    Attr(Attribute),
    Eof,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Str(s) => format!("string {s:?}"),
            Self::Int(i) => format!("number {i}"),
            Self::Float(f) => format!("number {f}"),
            Self::Duration(_) => "duration".into(),
            Self::Ident(i) => format!("{i:?}"),
            Self::Scoped(a, b) => format!("{a}:{b}"),
            Self::Attr(a) => format!("attribute {a}"),
            Self::Eof => "end of query".into(),
            other => format!("'{}'", symbol(other)),
        }
    }
}

fn symbol(tok: &Tok) -> &'static str {
    match tok {
        Tok::LBrace => "{",
        Tok::RBrace => "}",
        Tok::LParen => "(",
        Tok::RParen => ")",
        Tok::Pipe => "|",
        Tok::Comma => ",",
        Tok::Eq => "=",
        Tok::Neq => "!=",
        Tok::Gt => ">",
        Tok::Gte => ">=",
        Tok::Lt => "<",
        Tok::Lte => "<=",
        Tok::Regex => "=~",
        Tok::NotRegex => "!~",
        Tok::AndAnd => "&&",
        Tok::OrOr => "||",
        Tok::Not => "!",
        Tok::Plus => "+",
        Tok::Minus => "-",
        Tok::Star => "*",
        Tok::Slash => "/",
        Tok::Percent => "%",
        Tok::Caret => "^",
        Tok::Descendant => ">>",
        Tok::Ancestor => "<<",
        Tok::Tilde => "~",
        Tok::UnionChild => "&>",
        Tok::UnionParent => "&<",
        Tok::UnionDescendant => "&>>",
        Tok::UnionAncestor => "&<<",
        Tok::UnionSibling => "&~",
        _ => "?",
    }
}

const ATTRIBUTE_SCOPES: [(&str, AttributeScope); 5] = [
    ("span", AttributeScope::Span),
    ("resource", AttributeScope::Resource),
    ("event", AttributeScope::Event),
    ("link", AttributeScope::Link),
    ("instrumentation", AttributeScope::Instrumentation),
];

/// Characters that end an unquoted attribute name.
fn ends_name(c: char) -> bool {
    c.is_whitespace() || "{}()=!<>&|^,~\"+*/%".contains(c)
}

pub(crate) fn tokenize(query: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<(usize, char)> = query.char_indices().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).map(|(_, c)| *c);
    let offset = |i: usize| chars.get(i).map(|(o, _)| *o).unwrap_or(query.len());
    while i < chars.len() {
        let c = chars[i].1;
        let start = offset(i);
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two = (c, at(i + 1));
        let union = match (c, at(i + 1), at(i + 2)) {
            ('&', Some('>'), Some('>')) => Some((Tok::UnionDescendant, 3)),
            ('&', Some('<'), Some('<')) => Some((Tok::UnionAncestor, 3)),
            ('&', Some('>'), _) => Some((Tok::UnionChild, 2)),
            ('&', Some('<'), _) => Some((Tok::UnionParent, 2)),
            ('&', Some('~'), _) => Some((Tok::UnionSibling, 2)),
            _ => None,
        };
        if let Some((tok, len)) = union {
            tokens.push((tok, start));
            i += len;
            continue;
        }
        let (tok, len) = match two {
            ('>', Some('>')) => (Tok::Descendant, 2),
            ('<', Some('<')) => (Tok::Ancestor, 2),
            ('>', Some('=')) => (Tok::Gte, 2),
            ('<', Some('=')) => (Tok::Lte, 2),
            ('!', Some('=')) => (Tok::Neq, 2),
            ('!', Some('~')) => (Tok::NotRegex, 2),
            ('=', Some('~')) => (Tok::Regex, 2),
            ('&', Some('&')) => (Tok::AndAnd, 2),
            ('|', Some('|')) => (Tok::OrOr, 2),
            ('{', _) => (Tok::LBrace, 1),
            ('}', _) => (Tok::RBrace, 1),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('|', _) => (Tok::Pipe, 1),
            (',', _) => (Tok::Comma, 1),
            ('=', _) => (Tok::Eq, 1),
            ('>', _) => (Tok::Gt, 1),
            ('<', _) => (Tok::Lt, 1),
            ('!', _) => (Tok::Not, 1),
            ('+', _) => (Tok::Plus, 1),
            ('-', _) => (Tok::Minus, 1),
            ('*', _) => (Tok::Star, 1),
            ('/', _) => (Tok::Slash, 1),
            ('%', _) => (Tok::Percent, 1),
            ('^', _) => (Tok::Caret, 1),
            ('~', _) => (Tok::Tilde, 1),
            ('&', _) => return Err(ParseError::new(start, "a lone '&': use && (and) or a union operator such as &>")),
            _ => (Tok::Eof, 0),
        };
        if len > 0 {
            tokens.push((tok, start));
            i += len;
            continue;
        }
        if c == '"' || c == '`' {
            let (text, next) = string(&chars, i, start)?;
            tokens.push((Tok::Str(text), start));
            i = next;
        } else if c.is_ascii_digit() {
            let (tok, next) = number(&chars, i, start)?;
            tokens.push((tok, start));
            i = next;
        } else if c == '.' {
            let (name, next) = attribute_name(&chars, i + 1, start)?;
            tokens.push((Tok::Attr(Attribute { scope: AttributeScope::Unscoped, name }), start));
            i = next;
        } else if c.is_alphabetic() || c == '_' {
            let mut j = i;
            while at(j).is_some_and(|c| c.is_alphanumeric() || c == '_') {
                j += 1;
            }
            let word: String = chars[i..j].iter().map(|(_, c)| c).collect();
            if at(j) == Some('.')
                && let Some((_, scope)) = ATTRIBUTE_SCOPES.iter().find(|(s, _)| *s == word)
            {
                let (name, next) = attribute_name(&chars, j + 1, start)?;
                tokens.push((Tok::Attr(Attribute { scope: *scope, name }), start));
                i = next;
            } else if at(j) == Some(':') && at(j + 1).is_some_and(|c| c.is_alphabetic()) {
                let mut k = j + 1;
                while at(k).is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    k += 1;
                }
                let field: String = chars[j + 1..k].iter().map(|(_, c)| c).collect();
                tokens.push((Tok::Scoped(word, field), start));
                i = k;
            } else {
                tokens.push((Tok::Ident(word), start));
                i = j;
            }
        } else {
            return Err(ParseError::new(start, format!("unexpected character {c:?}")));
        }
    }
    tokens.push((Tok::Eof, query.len()));
    Ok(tokens)
}

fn string(chars: &[(usize, char)], i: usize, start: usize) -> Result<(String, usize), ParseError> {
    let quote = chars[i].1;
    let mut out = String::new();
    let mut j = i + 1;
    while j < chars.len() {
        let c = chars[j].1;
        if c == quote {
            return Ok((out, j + 1));
        }
        if c == '\\' && quote == '"' {
            let escaped =
                chars.get(j + 1).map(|(_, c)| *c).ok_or_else(|| ParseError::new(start, "unterminated string"))?;
            out.push(match escaped {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                other => other,
            });
            j += 2;
            continue;
        }
        out.push(c);
        j += 1;
    }
    Err(ParseError::new(start, "unterminated string"))
}

fn attribute_name(chars: &[(usize, char)], i: usize, start: usize) -> Result<(String, usize), ParseError> {
    match chars.get(i).map(|(_, c)| *c) {
        Some('"') => string(chars, i, start),
        Some(c) if !ends_name(c) => {
            let mut j = i;
            while chars.get(j).is_some_and(|(_, c)| !ends_name(*c)) {
                j += 1;
            }
            Ok((chars[i..j].iter().map(|(_, c)| c).collect(), j))
        }
        _ => Err(ParseError::new(start, "attribute name expected after '.'")),
    }
}

const UNITS: [(&str, f64); 7] =
    [("ns", 1.0), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)];

fn number(chars: &[(usize, char)], i: usize, start: usize) -> Result<(Tok, usize), ParseError> {
    let at = |j: usize| chars.get(j).map(|(_, c)| *c);
    let read_number = |mut j: usize| {
        let begin = j;
        while at(j).is_some_and(|c| c.is_ascii_digit()) {
            j += 1;
        }
        let mut float = false;
        if at(j) == Some('.') && at(j + 1).is_some_and(|c| c.is_ascii_digit()) {
            float = true;
            j += 1;
            while at(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
        }
        (chars[begin..j].iter().map(|(_, c)| c).collect::<String>(), float, j)
    };
    let read_unit = |j: usize| {
        let rest: String = chars[j..chars.len().min(j + 2)].iter().map(|(_, c)| c).collect();
        UNITS
            .iter()
            .filter(|(u, _)| rest.starts_with(u))
            .max_by_key(|(u, _)| u.chars().count())
            .filter(|(u, _)| !at(j + u.chars().count()).is_some_and(|c| c.is_alphabetic()))
            .copied()
    };
    let (text, float, mut j) = read_number(i);
    let Some(_) = read_unit(j) else {
        if at(j).is_some_and(|c| c.is_alphabetic()) {
            return Err(ParseError::new(start, "unknown duration unit: use ns, us, ms, s, m or h"));
        }
        let tok = if float {
            Tok::Float(text.parse().map_err(|_| ParseError::new(start, "invalid number"))?)
        } else {
            Tok::Int(text.parse().map_err(|_| ParseError::new(start, "integer out of range"))?)
        };
        return Ok((tok, j));
    };
    // A duration: one or more <number><unit> parts, e.g. 1h2m3.5s
    let mut nanos = 0f64;
    let mut text = text;
    loop {
        let (unit, factor) = read_unit(j).ok_or_else(|| ParseError::new(start, "duration part without a unit"))?;
        nanos += text.parse::<f64>().map_err(|_| ParseError::new(start, "invalid duration"))? * factor;
        j += unit.chars().count();
        if !at(j).is_some_and(|c| c.is_ascii_digit()) {
            break;
        }
        let (next, _, k) = read_number(j);
        text = next;
        j = k;
    }
    Ok((Tok::Duration(nanos.round() as i64), j))
}
