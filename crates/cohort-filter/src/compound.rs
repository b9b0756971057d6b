//! The compound filter language of `-S`:
//!
//! ```text
//! expr      := or
//! or        := and ("or" and)*
//! and       := unary ("and" unary)*
//! unary     := ("not" | "!") unary | primary
//! primary   := "(" expr ")" | statement
//! statement := fact op value | class | /class-regex/
//! op        := == | = | != | < | > | <= | >= | =~
//! value     := word | "quoted" | 'quoted' | /regex/
//! ```
//!
//! Keywords are case-insensitive. Two statements side by side (`a=1 b=2`) are an error, as in
//! MCollective, but `!=` is understood (MCollective read `a!=b` as fact `a!` equal to `b`).
//! Errors carry the 1-based column of the offending token.

use cohort_proto::{Expr, FactOp};

use crate::FilterError;
use crate::statement::{operator_at, statement};

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Statement(Expr),
}

struct Lexer<'a> {
    input: &'a str,
    at: usize,
}

impl<'a> Lexer<'a> {
    fn error(&self, column_at: usize, reason: impl Into<String>) -> FilterError {
        FilterError::Compound {
            input: self.input.to_owned(),
            column: self.input[..column_at].chars().count() + 1,
            reason: reason.into(),
        }
    }

    fn rest(&self) -> &'a str {
        &self.input[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Reads up to a closing `/`, honouring `\/` escapes; `self.at` is just past the opening one.
    fn regex(&mut self, start: usize) -> Result<&'a str, FilterError> {
        let rest = self.rest();
        let mut escaped = false;
        for (idx, c) in rest.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '/' if !escaped => {
                    self.at += idx + 1;
                    return Ok(&rest[..idx]);
                }
                _ => escaped = false,
            }
        }
        Err(self.error(start, "unterminated /regex/"))
    }

    fn word(&mut self) -> &'a str {
        let rest = self.rest();
        let end = rest
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '(' | ')' | '=' | '<' | '>' | '!' | '~')
            })
            .unwrap_or(rest.len());
        self.at += end;
        &rest[..end]
    }

    fn operator(&mut self) -> Option<FactOp> {
        let (len, op) = operator_at(self.rest())?;
        self.at += len;
        Some(op)
    }

    fn value(&mut self, op_at: usize) -> Result<(String, bool), FilterError> {
        self.skip_space();
        let start = self.at;
        let rest = self.rest();
        match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let Some(end) = rest[1..].find(quote) else {
                    return Err(self.error(start, "unterminated quoted value"));
                };
                self.at += end + 2;
                Ok((rest[1..=end].to_owned(), false))
            }
            Some('/') => {
                self.at += 1;
                Ok((self.regex(start)?.to_owned(), true))
            }
            _ => {
                let end = rest
                    .find(|c: char| c.is_whitespace() || matches!(c, '(' | ')'))
                    .unwrap_or(rest.len());
                if end == 0 {
                    return Err(self.error(op_at, "missing value after operator"));
                }
                self.at += end;
                Ok((rest[..end].to_owned(), false))
            }
        }
    }

    fn next(&mut self) -> Result<Option<(usize, Token)>, FilterError> {
        self.skip_space();
        let start = self.at;
        let Some(c) = self.rest().chars().next() else { return Ok(None) };
        let token = match c {
            '(' => {
                self.at += 1;
                Token::Open
            }
            ')' => {
                self.at += 1;
                Token::Close
            }
            '!' if !self.rest().starts_with("!=") => {
                self.at += 1;
                Token::Not
            }
            '/' => {
                self.at += 1;
                let pattern = self.regex(start)?;
                Token::Statement(Expr::Class(format!("/{pattern}/")))
            }
            _ => {
                let word = self.word();
                if word.is_empty() {
                    return Err(self.error(start, format!("unexpected {c:?}")));
                }
                match word.to_ascii_lowercase().as_str() {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    _ => {
                        let before_op = self.at;
                        self.skip_space();
                        let op_at = self.at;
                        match self.operator() {
                            Some(op) => {
                                let (value, was_regex) = self.value(op_at)?;
                                Token::Statement(Expr::Fact(statement(word, op, &value, was_regex)))
                            }
                            None => {
                                self.at = before_op;
                                Token::Statement(Expr::Class(word.to_owned()))
                            }
                        }
                    }
                }
            }
        };
        Ok(Some((start, token)))
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    tokens: Vec<(usize, Token)>,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, token)| token)
    }

    fn column(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.lexer.input.len(), |(at, _)| *at)
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        let column = self.column();
        match self.tokens.get(self.pos).map(|(_, token)| token.clone()) {
            Some(Token::Open) => {
                self.pos += 1;
                let inner = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(self.lexer.error(self.column(), "missing ')'"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Statement(expr)) => {
                self.pos += 1;
                Ok(expr)
            }
            Some(Token::Close) => Err(self.lexer.error(column, "unexpected ')'")),
            Some(Token::And | Token::Or) => Err(self
                .lexer
                .error(column, "expected a fact, class, 'not' or '(' before 'and'/'or'")),
            Some(Token::Not) => Err(self.lexer.error(column, "unexpected 'not'")),
            None => Err(self.lexer.error(column, "expression ends too early")),
        }
    }
}

/// Parses one `-S` expression.
pub fn parse_compound(input: &str) -> Result<Expr, FilterError> {
    let mut lexer = Lexer { input, at: 0 };
    let mut tokens = Vec::new();
    while let Some(token) = lexer.next()? {
        tokens.push(token);
    }
    let mut parser = Parser { lexer: Lexer { input, at: 0 }, tokens, pos: 0 };
    let expr = parser.or()?;
    if parser.pos < parser.tokens.len() {
        let column = parser.column();
        let reason = match parser.peek() {
            Some(Token::Close) => "unexpected ')'",
            _ => "expected 'and', 'or' or the end; two statements need 'and' or 'or' between them",
        };
        return Err(parser.lexer.error(column, reason));
    }
    Ok(expr)
}

#[cfg(test)]
mod tests;
