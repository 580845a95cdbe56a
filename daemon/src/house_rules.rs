//! The shape the crate's source keeps, read from its text, so the checks need no tool and no
//! build:
//! - the top-level modules do not import each other in a loop, and `config` imports none of them:
//!   a loop makes every module in it a prerequisite of every other, so none can be read, changed
//!   or tested alone;
//! - one file holds one idea: no file over 500 lines, and no function over 80.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules its files name through `crate::`.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir`, with the top-level module it belongs to (`vault/key.rs` ->
/// `vault`). The crate root (`lib.rs`, `main.rs`) belongs to no module.
fn sources(dir: &Path, module: Option<&str>, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let owner = module.map_or(name.clone(), str::to_owned);
        if path.is_dir() {
            sources(&path, Some(&owner), out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && !(module.is_none() && (name == "lib" || name == "main"))
        {
            out.push((owner, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The modules `text` names after `crate::`, in paths (`crate::vault::Vault`) and in groups
/// (`use crate::{config::Config, vault}`). Comments are left out: a doc link is not an import.
fn named_modules(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            names.insert(ident(rest));
            continue;
        };
        // Only the first name of each item at the group's own depth.
        let (mut depth, mut item_start) = (0, true);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && !c.is_whitespace() => {
                    names.insert(ident(&group[i..]));
                    item_start = false;
                }
                _ => {}
            }
        }
    }
    names
}

fn graph() -> Graph {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        None,
        &mut files,
    );
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (module, text) in &files {
        let targets = named_modules(text)
            .into_iter()
            .filter(|t| t != module && modules.contains(t));
        graph.entry(module.clone()).or_default().extend(targets);
    }
    graph
}

/// A loop of modules, first module repeated at the end, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_import_each_other_in_no_loop() {
    let graph = graph();
    assert!(graph.contains_key("vault") && graph.contains_key("config"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module loop: {}", cycle.join(" -> "));
    }
}

#[test]
fn config_imports_nothing_from_the_crate() {
    assert_eq!(graph()["config"], BTreeSet::new());
}

#[test]
fn the_reader_sees_paths_and_groups_but_not_comments() {
    let text = "use crate::config::Config;\nuse crate::{vault::{self, Vault}, mirror};\n\
                let x = crate::refresh::run();\n/// [`crate::api`]\n";
    let names: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(names, ["config", "mirror", "refresh", "vault"]);
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "a"]);
}

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

/// Every `.rs` file under `src`, by path relative to it.
fn files_by_path() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                out.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

/// `(first line, lines)` of each function with a body in rustfmt-formatted `text`: from its `fn`
/// line to the `}` at the same indentation. A comment after a brace does not hide either end.
fn function_spans(text: &str) -> Vec<(usize, usize)> {
    // The line without a trailing `//` comment (good enough here: no signature or lone brace
    // holds a string with `//` in it).
    let code: Vec<&str> = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or("").trim_end())
        .collect();
    let mut spans = Vec::new();
    for (start, line) in code.iter().enumerate() {
        let trimmed = line.trim_start();
        let signature = trimmed.starts_with("fn ") || trimmed.contains(" fn ");
        if !signature || trimmed.starts_with("let ") {
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let Some(open) = (start..code.len())
            .find(|&i| code[i].ends_with('{') || code[i].ends_with(';') || code[i].ends_with('}'))
        else {
            continue;
        };
        if code[open].ends_with(';') {
            continue; // a declaration without a body
        }
        if code[open].ends_with('}') {
            spans.push((start + 1, open - start + 1)); // `fn f() {}`
            continue;
        }
        let closing = format!("{indent}}}");
        if let Some(end) = (open..code.len()).find(|&i| code[i] == closing) {
            spans.push((start + 1, end - start + 1));
        }
    }
    spans
}

#[test]
fn no_source_file_is_over_500_lines_and_no_function_over_80() {
    let mut too_long = Vec::new();
    for (path, text) in files_by_path() {
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            too_long.push(format!("{path}: {lines} lines"));
        }
        for (at, lines) in function_spans(&text) {
            if lines > MAX_FN_LINES {
                too_long.push(format!("{path}:{at}: a function of {lines} lines"));
            }
        }
    }
    assert!(too_long.is_empty(), "split these: {too_long:#?}");
}

#[test]
fn the_function_reader_measures_bodies_and_skips_declarations() {
    let text = "fn a() {\n    x();\n}\n\ntrait T {\n    fn b(&self);\n    fn c(&self) {\n    }\n}\n\
                pub(crate) async fn d(\n    x: u8,\n) -> u8 {\n    x\n}\n\
                fn e() {}\nfn f() { // why\n    let y = 1;\n} // done\n";
    assert_eq!(
        function_spans(text),
        [(1, 3), (7, 2), (10, 5), (15, 1), (16, 3)]
    );
}
