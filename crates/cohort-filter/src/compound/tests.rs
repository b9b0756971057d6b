//! Table tests of the `-S` language, shown as a compact rendering of the parsed tree.

use super::*;

fn render(expr: &Expr) -> String {
    match expr {
        Expr::And(a, b) => format!("({} AND {})", render(a), render(b)),
        Expr::Or(a, b) => format!("({} OR {})", render(a), render(b)),
        Expr::Not(a) => format!("NOT {}", render(a)),
        Expr::Fact(fact) => format!("{}{}{:?}", fact.fact, fact.op.as_str(), fact.value),
        Expr::Class(class) => format!("class:{class}"),
    }
}

#[track_caller]
fn check(input: &str, expect: &str) {
    let expr = parse_compound(input).unwrap_or_else(|err| panic!("{input}: {err}"));
    assert_eq!(render(&expr), expect, "{input}");
}

#[test]
fn statements() {
    check("country=uk", "country==\"uk\"");
    check("country = uk", "country==\"uk\"");
    check("country!=uk", "country!=\"uk\"");
    check("cpus>=2", "cpus>=\"2\"");
    check("cpus <= 2", "cpus<=\"2\"");
    check("motd='hello world'", "motd==\"hello world\"");
    check("motd=\"a (b) c\"", "motd==\"a (b) c\"");
    check("host=/^web\\/1/", "host=~\"^web\\\\/1\"");
    check("host=~/^web/", "host=~\"^web\"");
    check("host=~^web", "host=~\"^web\"");
    check("role::web", "class:role::web");
    check("/^role::(web|db)$/", "class:/^role::(web|db)$/");
    check("os.release.major>=12", "os.release.major>=\"12\"");
}

#[test]
fn precedence_and_grouping() {
    check("a and b or c", "((class:a AND class:b) OR class:c)");
    check("a or b and c", "(class:a OR (class:b AND class:c))");
    check("(a or b) and c", "((class:a OR class:b) AND class:c)");
    check("not a and b", "(NOT class:a AND class:b)");
    check("!a", "NOT class:a");
    check("! country=uk", "NOT country==\"uk\"");
    check("not (a or b)", "NOT (class:a OR class:b)");
    check("x=1 AND y=2 Or NOT z", "((x==\"1\" AND y==\"2\") OR NOT class:z)");
    check("(country=uk)and(role=web)", "(country==\"uk\" AND role==\"web\")");
}

#[track_caller]
fn check_err(input: &str, column: usize, reason: &str) {
    match parse_compound(input) {
        Err(FilterError::Compound { column: got, reason: why, .. }) => {
            assert_eq!(got, column, "{input}: {why}");
            assert!(why.contains(reason), "{input}: {why}");
        }
        other => panic!("{input}: {other:?}"),
    }
}

#[test]
fn errors_point_at_the_problem() {
    check_err("a=1 b=2", 5, "two statements need");
    check_err("(a or b", 8, "missing ')'");
    check_err("a or b)", 7, "unexpected ')'");
    check_err("and a", 1, "before 'and'");
    check_err("a and", 6, "ends too early");
    check_err("", 1, "ends too early");
    check_err("a=", 2, "missing value");
    check_err("a='open", 3, "unterminated quoted value");
    check_err("/open", 1, "unterminated /regex/");
    check_err("a or not", 9, "ends too early");
}
