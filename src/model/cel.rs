//! A small CEL subset for `when: [{cel: ...}]` (Tekton's alpha CEL when expressions):
//! literals (strings, numbers, booleans, lists), `== != < <= > >=`, `&& || !`, `in`,
//! parentheses, `int()`, `double()`, `string()`, and the string methods `startsWith`,
//! `endsWith`, `contains`, and `matches` (also as `matches(s, re)`): an RE2 regular
//! expression, true when it matches any part of the string unless anchored with `^...$`,
//! as in cel-go. Raw strings (`r'\d+'`) keep backslashes. Tekton substitutes `$(...)` first, so
//! expressions compare quoted values: `"'$(params.branch)' == 'main'"`, or numbers:
//! `"double('$(tasks.eval.results.accuracy)') >= 0.9"`. Types are strict as in CEL:
//! comparing a string with a number is an error, not false.

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<Val>),
}

impl Val {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Str(_) => "string",
            Val::Num(_) => "number",
            Val::Bool(_) => "bool",
            Val::List(_) => "list",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Num(f64),
    Ident(String),
    Op(&'static str),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '\'' || ch == '"' || (matches!(ch, 'r' | 'R') && matches!(c.get(i + 1), Some('\'' | '"'))) {
            // r'...' is a raw string: backslashes are kept (regular expressions)
            let raw = matches!(ch, 'r' | 'R');
            if raw {
                i += 1;
            }
            let q = c[i];
            let mut lit = String::new();
            i += 1;
            while i < c.len() && c[i] != q {
                if c[i] == '\\' && i + 1 < c.len() && !raw {
                    i += 1;
                }
                lit.push(c[i]);
                i += 1;
            }
            if i >= c.len() {
                return Err("unterminated string literal".into());
            }
            i += 1;
            out.push(Tok::Str(lit));
        } else if ch.is_ascii_digit() || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.' || c[i] == 'e' || c[i] == 'E') {
                i += 1;
            }
            let t: String = c[start..i].iter().collect();
            out.push(Tok::Num(t.parse().map_err(|_| format!("invalid number {t:?}"))?));
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let op = ["==", "!=", "<=", ">=", "&&", "||"].into_iter().find(|o| *o == two);
            if let Some(o) = op {
                out.push(Tok::Op(o));
                i += 2;
            } else {
                let o = match ch {
                    '<' => "<",
                    '>' => ">",
                    '!' => "!",
                    '(' => "(",
                    ')' => ")",
                    '[' => "[",
                    ']' => "]",
                    ',' => ",",
                    '.' => ".",
                    '-' => "-",
                    _ => return Err(format!("unexpected character {ch:?}")),
                };
                out.push(Tok::Op(o));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The deepest nesting of parentheses, lists, calls and unary operators an expression
/// may have: the parser recurses once per level.
const MAX_NESTING: usize = 64;

struct P {
    t: Vec<Tok>,
    i: usize,
    /// Current nesting, against [`MAX_NESTING`].
    depth: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn eat(&mut self, op: &str) -> bool {
        if self.peek() == Some(&Tok::Op(leak(op))) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(format!("expected {op:?}"))
        }
    }
    fn or(&mut self) -> Result<Val, String> {
        self.nested(Self::or_inner)
    }
    /// Run one nested level of the grammar, refusing to go deeper than [`MAX_NESTING`].
    fn nested(&mut self, f: fn(&mut Self) -> Result<Val, String>) -> Result<Val, String> {
        if self.depth >= MAX_NESTING {
            return Err(format!("expression nested deeper than {MAX_NESTING} levels"));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }
    fn or_inner(&mut self) -> Result<Val, String> {
        let mut l = self.and()?;
        while self.eat("||") {
            let r = self.and()?;
            l = Val::Bool(truth(&l)? || truth(&r)?);
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Val, String> {
        let mut l = self.cmp()?;
        while self.eat("&&") {
            let r = self.cmp()?;
            l = Val::Bool(truth(&l)? && truth(&r)?);
        }
        Ok(l)
    }
    fn cmp(&mut self) -> Result<Val, String> {
        let l = self.unary()?;
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if self.eat(op) {
                let r = self.unary()?;
                return compare(op, &l, &r).map(Val::Bool);
            }
        }
        if self.peek() == Some(&Tok::Ident("in".into())) {
            self.i += 1;
            let r = self.unary()?;
            return match r {
                Val::List(items) => Ok(Val::Bool(items.contains(&l))),
                other => Err(format!("'in' needs a list, got {}", other.type_name())),
            };
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Val, String> {
        self.nested(Self::unary_inner)
    }
    fn unary_inner(&mut self) -> Result<Val, String> {
        if self.eat("!") {
            let v = self.unary()?;
            return Ok(Val::Bool(!truth(&v)?));
        }
        if self.eat("-") {
            return match self.unary()? {
                Val::Num(n) => Ok(Val::Num(-n)),
                other => Err(format!("cannot negate a {}", other.type_name())),
            };
        }
        let mut v = self.primary()?;
        while self.eat(".") {
            let Some(Tok::Ident(m)) = self.peek().cloned() else {
                return Err("expected a method name after '.'".into());
            };
            self.i += 1;
            self.expect("(")?;
            let arg = self.or()?;
            self.expect(")")?;
            v = match (&v, &arg, m.as_str()) {
                (Val::Str(a), Val::Str(b), "startsWith") => Val::Bool(a.starts_with(b.as_str())),
                (Val::Str(a), Val::Str(b), "endsWith") => Val::Bool(a.ends_with(b.as_str())),
                (Val::Str(a), Val::Str(b), "contains") => Val::Bool(a.contains(b.as_str())),
                (Val::Str(a), Val::Str(re), "matches") => Val::Bool(matches(a, re)?),
                _ => return Err(format!("unsupported method {m}() on {}", v.type_name())),
            };
        }
        Ok(v)
    }
    fn primary(&mut self) -> Result<Val, String> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.i += 1;
                Ok(Val::Str(s))
            }
            Some(Tok::Num(n)) => {
                self.i += 1;
                Ok(Val::Num(n))
            }
            Some(Tok::Ident(id)) => {
                self.i += 1;
                match id.as_str() {
                    "true" => Ok(Val::Bool(true)),
                    "false" => Ok(Val::Bool(false)),
                    "int" | "double" | "string" => {
                        self.expect("(")?;
                        let v = self.or()?;
                        self.expect(")")?;
                        convert(&id, v)
                    }
                    "matches" => {
                        self.expect("(")?;
                        let v = self.or()?;
                        self.expect(",")?;
                        let re = self.or()?;
                        self.expect(")")?;
                        match (&v, &re) {
                            (Val::Str(a), Val::Str(re)) => Ok(Val::Bool(matches(a, re)?)),
                            _ => Err(format!("no such overload: matches({}, {})", v.type_name(), re.type_name())),
                        }
                    }
                    other => Err(format!(
                        "unknown identifier {other:?} (Tekton variables must be substituted, and quoted when strings)"
                    )),
                }
            }
            Some(Tok::Op("(")) => {
                self.i += 1;
                let v = self.or()?;
                self.expect(")")?;
                Ok(v)
            }
            Some(Tok::Op("[")) => {
                self.i += 1;
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.or()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                        if self.eat("]") {
                            break;
                        }
                    }
                }
                Ok(Val::List(items))
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("unexpected end of expression".into()),
        }
    }
}

fn leak(op: &str) -> &'static str {
    ["==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", ",", ".", "-"]
        .into_iter()
        .find(|o| *o == op)
        .unwrap_or("")
}

/// Longest regular expression `matches` accepts, in bytes.
pub const MAX_PATTERN: usize = 4096;

/// Largest compiled program of a `matches` pattern (`regex`'s size limit), so that
/// counted repetitions like `(a{1000}){1000}` are refused instead of eating memory.
const MAX_PROGRAM: usize = 1 << 20;

/// CEL `matches`: whether the RE2 pattern `re` matches any part of `s` (cel-go's
/// `regexp.MatchString`). The `regex` crate runs in time linear in the input, so a
/// hostile pattern cannot stall a run; oversized and invalid patterns are errors.
fn matches(s: &str, re: &str) -> Result<bool, String> {
    if re.len() > MAX_PATTERN {
        return Err(format!("matches(): the regular expression is {} bytes, more than {MAX_PATTERN}", re.len()));
    }
    let compiled =
        regex::RegexBuilder::new(&re2_perl_classes(re)).size_limit(MAX_PROGRAM).build().map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => format!("matches(): the regular expression {re:?} is too large"),
            e => format!("matches(): invalid regular expression {re:?}: {e}"),
        })?;
    Ok(compiled.is_match(s))
}

/// RE2's Perl classes are ASCII (`\d` is `[0-9]`, `\s` has no `\v`), the `regex` crate's
/// are Unicode: rewrite them to RE2's meaning, inside and outside brackets.
fn re2_perl_classes(re: &str) -> String {
    const D: &str = "0-9";
    const W: &str = "0-9A-Za-z_";
    const S: &str = "\\t\\n\\f\\r ";
    let mut out = String::with_capacity(re.len());
    let mut depth = 0usize;
    let mut it = re.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some(n @ ('d' | 'w' | 's' | 'D' | 'W' | 'S')) => {
                    let set = match n.to_ascii_lowercase() {
                        'd' => D,
                        'w' => W,
                        _ => S,
                    };
                    match (n.is_ascii_uppercase(), depth > 0) {
                        (false, true) => out.push_str(set),
                        (false, false) => out.push_str(&format!("[{set}]")),
                        // negated: a nested class, also inside brackets
                        (true, _) => out.push_str(&format!("[^{set}]")),
                    }
                }
                Some(n @ ('b' | 'B')) if depth == 0 => out.push_str(&format!("(?-u:\\{n})")),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' => {
                depth += 1;
                out.push('[');
                // `[]a]` and `[^]a]`: a `]` first in a class is a literal
                if it.peek() == Some(&'^') {
                    out.push('^');
                    it.next();
                }
                if it.peek() == Some(&']') {
                    out.push_str("\\]");
                    it.next();
                }
            }
            ']' if depth > 0 => {
                depth -= 1;
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

fn truth(v: &Val) -> Result<bool, String> {
    match v {
        Val::Bool(b) => Ok(*b),
        other => Err(format!("expected a bool, got {}", other.type_name())),
    }
}

fn convert(f: &str, v: Val) -> Result<Val, String> {
    match (f, v) {
        ("string", Val::Str(s)) => Ok(Val::Str(s)),
        ("string", Val::Num(n)) => Ok(Val::Str(n.to_string())),
        ("string", Val::Bool(b)) => Ok(Val::Str(b.to_string())),
        ("double" | "int", Val::Num(n)) => Ok(Val::Num(if f == "int" { n.trunc() } else { n })),
        ("double" | "int", Val::Str(s)) => {
            let n: f64 = s.trim().parse().map_err(|_| format!("{f}({s:?}): not a number"))?;
            Ok(Val::Num(if f == "int" { n.trunc() } else { n }))
        }
        (f, v) => Err(format!("cannot convert {} with {f}()", v.type_name())),
    }
}

fn compare(op: &str, l: &Val, r: &Val) -> Result<bool, String> {
    use std::cmp::Ordering;
    let ord = match (l, r) {
        (Val::Str(a), Val::Str(b)) => a.cmp(b),
        (Val::Num(a), Val::Num(b)) => a.partial_cmp(b).ok_or("NaN comparison")?,
        (Val::Bool(a), Val::Bool(b)) => a.cmp(b),
        (Val::List(a), Val::List(b)) if op == "==" || op == "!=" => {
            return Ok((a == b) == (op == "=="));
        }
        _ => return Err(format!("no such overload: {} {op} {}", l.type_name(), r.type_name())),
    };
    Ok(match op {
        "==" => ord == Ordering::Equal,
        "!=" => ord != Ordering::Equal,
        "<" => ord == Ordering::Less,
        "<=" => ord != Ordering::Greater,
        ">" => ord == Ordering::Greater,
        _ => ord != Ordering::Less,
    })
}

/// Evaluate an (already substituted) expression to a bool.
pub fn eval_bool(expr: &str) -> Result<bool, String> {
    let mut p = P { t: lex(expr)?, i: 0, depth: 0 };
    let v = p.or()?;
    if p.i != p.t.len() {
        return Err(format!("unexpected {:?} after the expression", p.t[p.i]));
    }
    match v {
        Val::Bool(b) => Ok(b),
        other => Err(format!("the expression is a {}, not a bool", other.type_name())),
    }
}

/// Whether a `when` expression holds, after substituting `vars`: `input` `in`/`notin`
/// `values` (exact string match, isolated arrays spliced), or a `cel` expression.
pub fn when_holds(w: &crate::model::WhenExpression, vars: &crate::model::subst::Vars) -> Result<bool, String> {
    if let Some(cel) = &w.cel {
        let expr = vars.apply_str(cel);
        return eval_bool(&expr).map_err(|e| format!("CEL expression {expr:?}: {e}"));
    }
    let input = vars.apply_str(w.input.as_deref().unwrap_or(""));
    let values = vars.apply_list(w.values.as_deref().unwrap_or(&[]));
    let hit = values.contains(&input);
    Ok(if w.operator.as_deref() == Some("notin") { !hit } else { hit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let rows = [
            ("'README.md' == 'README.md'", Ok(true)),
            ("'a' != 'b'", Ok(true)),
            ("'yes'=='missing'", Ok(false)),
            ("double('0.93') >= 0.9", Ok(true)),
            ("double('0.85') >= 0.9 || 'main' in ['main', 'dev']", Ok(true)),
            ("!(1 < 2) && true", Ok(false)),
            ("int('7') == 7", Ok(true)),
            ("'feature/x'.startsWith('feature/')", Ok(true)),
            ("-1 < 0", Ok(true)),
        ];
        for (e, want) in rows {
            assert_eq!(eval_bool(e), want, "{e}");
        }
        for bad in ["'0.9' > 0.5", "1 +", "'x'", "unknown == 1", "'abc", "double('x') > 1"] {
            assert!(eval_bool(bad).is_err(), "{bad} should be an error");
        }
    }

    /// `matches` is an RE2 regular expression with cel-go's semantics: a partial match
    /// unless anchored, ASCII Perl classes, and errors (not false) for bad patterns.
    #[test]
    fn matches_is_a_regular_expression() {
        let rows = [
            // partial match unless anchored (was a substring test, and '^v' never matched)
            ("'v1.2.3'.matches('^v[0-9]+[.][0-9]+[.][0-9]+$')", true),
            ("'release-v1.2'.matches('v[0-9]')", true),
            ("'release-v1.2'.matches('^v[0-9]')", false),
            ("'main'.matches('^(main|master)$')", true),
            ("'mainline'.matches('^(main|master)$')", false),
            ("'feature/x'.matches('a.*x')", true),
            ("'abc'.matches('')", true),
            // the global form and raw strings
            ("matches('refs/heads/main', '^refs/heads/')", true),
            ("'v10'.matches(r'^v\\d+$')", true),
            ("'v10'.matches('^v\\\\d+$')", true),
            // RE2's \d, \w, \s and \b are ASCII; Unicode classes are spelled \pN
            ("'٣'.matches(r'^\\d$')", false),
            ("'٣'.matches(r'^\\pN$')", true),
            ("'é'.matches(r'^\\w$')", false),
            ("'a\u{b}b'.matches(r'a\\sb')", false),
            ("'a b'.matches(r'a\\sb')", true),
            ("'x9'.matches(r'^[\\dx]+$')", true),
            ("'x-'.matches(r'^[\\d\\D]+$')", true),
            ("'é'.matches(r'^\\W$')", true),
            ("'ab'.matches(r'\\bb')", false),
            ("'a b'.matches(r'\\bb')", true),
            ("']a'.matches('^[]a]+$')", true),
            ("'MAIN'.matches('(?i)^main$')", true),
            ("'a.b'.matches(r'^a\\.b$')", true),
            ("'axb'.matches(r'^a\\.b$')", false),
        ];
        for (e, want) in rows {
            assert_eq!(eval_bool(e), Ok(want), "{e}");
        }
        for (bad, why) in [
            ("'a'.matches('(')", "invalid regular expression"),
            ("'aa'.matches(r'(a)\\1')", "invalid regular expression"),
            ("'a'.matches('(?=a)')", "invalid regular expression"),
            ("'a'.matches(r'(a{1000}){1000}')", "too large"),
            ("(1).matches('a')", "unsupported method"),
            ("'a'.matches(1)", "unsupported method"),
            ("matches('a', 1)", "no such overload"),
        ] {
            let err = eval_bool(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let long = format!("'a'.matches('{}')", "a".repeat(MAX_PATTERN + 1));
        assert!(eval_bool(&long).unwrap_err().contains("more than 4096"));
        // linear time: the classic catastrophic-backtracking pattern on a long subject
        let t = std::time::Instant::now();
        let e = format!("'{}!'.matches('^(a+)+$')", "a".repeat(100_000));
        assert_eq!(eval_bool(&e), Ok(false));
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn nesting_is_bounded() {
        // within the limit
        assert_eq!(eval_bool(&format!("{}true{}", "(".repeat(20), ")".repeat(20))), Ok(true));
        assert_eq!(eval_bool(&format!("{}true", "!".repeat(20))), Ok(true));
        // far past it: an error, not a stack overflow
        for e in [
            format!("{}true{}", "(".repeat(100_000), ")".repeat(100_000)),
            format!("{}true", "!".repeat(100_000)),
            format!("{}1 < 2", "-".repeat(100_000)),
            format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("{}'1'{} == 1", "int(".repeat(100_000), ")".repeat(100_000)),
            format!("'a'{}", ".contains('a'".repeat(50_000)),
        ] {
            let err = eval_bool(&e).unwrap_err();
            assert!(err.contains("nested deeper than 64 levels"), "{err}");
        }
    }
}
