//! The secrets audit: every plaintext secret the run handed the daemon, searched for in every
//! place the daemon wrote or answered. Access tokens are searched for too, in the places they
//! must not be (logs, metrics, the vault file); the API's token answers and the mirror's table
//! hold them by design.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;

/// What is looked for.
pub struct Needles {
    /// (label, value) of every secret.
    pub secrets: Vec<(String, String)>,
    /// Every access token seen.
    pub tokens: Vec<String>,
}

/// One place searched.
pub struct Place {
    pub name: String,
    /// The files or in-memory texts searched.
    pub sources: Vec<Source>,
    /// Whether access tokens are forbidden here too.
    pub tokens_forbidden: bool,
}

pub enum Source {
    File(PathBuf),
    Bytes(String, Vec<u8>),
}

/// Hits in one place.
pub struct PlaceHits {
    pub name: String,
    pub bytes: u64,
    pub files: usize,
    pub secret_hits: u64,
    pub token_hits: Option<u64>,
    /// The first few labels hit (never the values).
    pub examples: Vec<String>,
}

/// Every file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Search every place for every needle.
pub fn search(needles: &Needles, places: &[Place]) -> Vec<PlaceHits> {
    let secret_matcher =
        AhoCorasick::new(needles.secrets.iter().map(|(_, v)| v.as_str())).expect("matcher");
    let token_matcher = AhoCorasick::new(needles.tokens.iter()).expect("matcher");
    let mut out = Vec::new();
    for place in places {
        let mut hits = PlaceHits {
            name: place.name.clone(),
            bytes: 0,
            files: 0,
            secret_hits: 0,
            token_hits: place.tokens_forbidden.then_some(0),
            examples: Vec::new(),
        };
        for source in &place.sources {
            let (what, bytes): (String, Cow<'_, [u8]>) = match source {
                Source::File(p) => match std::fs::read(p) {
                    Ok(b) => (p.display().to_string(), Cow::Owned(b)),
                    Err(_) => continue,
                },
                Source::Bytes(name, b) => (name.clone(), Cow::Borrowed(b)),
            };
            hits.files += 1;
            hits.bytes += bytes.len() as u64;
            let mut by_label: BTreeMap<String, u64> = BTreeMap::new();
            for m in secret_matcher.find_overlapping_iter(&*bytes) {
                hits.secret_hits += 1;
                *by_label
                    .entry(needles.secrets[m.pattern().as_usize()].0.clone())
                    .or_default() += 1;
            }
            if place.tokens_forbidden && !needles.tokens.is_empty() {
                for _ in token_matcher.find_overlapping_iter(&*bytes) {
                    *hits.token_hits.get_or_insert(0) += 1;
                    *by_label.entry("an access token".to_owned()).or_default() += 1;
                }
            }
            for (label, n) in by_label {
                if hits.examples.len() < 5 {
                    hits.examples.push(format!("{label} x{n} in {what}"));
                }
            }
        }
        out.push(hits);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_secrets_and_tokens_where_forbidden() {
        let needles = Needles {
            secrets: vec![("pw".into(), "hunter2-secret".into())],
            tokens: vec!["TOKEN123456".into()],
        };
        let places = [
            Place {
                name: "log".into(),
                sources: vec![Source::Bytes(
                    "a".into(),
                    b"x hunter2-secret y TOKEN123456".to_vec(),
                )],
                tokens_forbidden: true,
            },
            Place {
                name: "api".into(),
                sources: vec![Source::Bytes("b".into(), b"TOKEN123456".to_vec())],
                tokens_forbidden: false,
            },
        ];
        let hits = search(&needles, &places);
        assert_eq!(hits[0].secret_hits, 1);
        assert_eq!(hits[0].token_hits, Some(1));
        assert_eq!(hits[1].secret_hits, 0);
        assert_eq!(hits[1].token_hits, None);
    }
}
