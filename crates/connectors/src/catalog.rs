//! The catalog: every loaded provider by name, with search, category filter and sorting for
//! the marketplace.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::load::{ManifestError, bundled, load_dir};
use crate::manifest::Category;
use crate::provider::Provider;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Most installed first (installs across tenants), then by name.
    #[default]
    Popularity,
    Name,
    /// By first category, then by name.
    Category,
}

#[derive(Debug, Clone, Default)]
pub struct Query {
    pub category: Option<Category>,
    /// Words that must all appear in the name, display name, description or categories.
    pub search: Option<String>,
    pub sort: Sort,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Default)]
pub struct Catalog {
    providers: BTreeMap<String, Arc<Provider>>,
}

impl Catalog {
    /// The bundled manifests plus every manifest in `extra_dirs`. A provider in an extra
    /// folder replaces a bundled one of the same name (operators may patch a manifest); two
    /// extra manifests of one name are an error.
    pub fn load(extra_dirs: &[PathBuf]) -> Result<Self, ManifestError> {
        let mut providers: BTreeMap<String, Arc<Provider>> =
            bundled()?.into_iter().map(|p| (p.name().to_string(), p)).collect();
        let mut from_extra: HashMap<String, String> = HashMap::new();
        for dir in extra_dirs {
            for provider in load_dir(dir)? {
                if let Some(earlier) = from_extra.insert(provider.name().to_string(), provider.source.clone()) {
                    return Err(ManifestError {
                        file: provider.source.clone(),
                        path: "name".into(),
                        reason: format!("{:?} is already declared by {earlier}", provider.name()),
                    });
                }
                providers.insert(provider.name().to_string(), provider);
            }
        }
        Ok(Self { providers })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    pub fn len(&self) -> usize {
        self.providers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Names close to a misspelt one, best first (for "did you mean").
    pub fn close_names(&self, name: &str) -> Vec<String> {
        let wanted = name.to_ascii_lowercase();
        let mut scored: Vec<(f64, &String)> = self
            .providers
            .keys()
            .map(|candidate| {
                let mut score = strsim::jaro_winkler(&wanted, candidate);
                if candidate.contains(&wanted) || (!candidate.is_empty() && wanted.contains(candidate.as_str())) {
                    score = score.max(0.9);
                }
                (score, candidate)
            })
            .filter(|(score, _)| *score >= 0.75)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored.into_iter().take(5).map(|(_, name)| name.clone()).collect()
    }

    /// One page of matching providers, and whether more follow.
    pub fn search(&self, query: &Query, installs: &HashMap<String, u64>) -> (Vec<Arc<Provider>>, bool) {
        let words: Vec<String> =
            query.search.as_deref().unwrap_or("").split_whitespace().map(str::to_lowercase).collect();
        let mut matches: Vec<&Arc<Provider>> = self
            .providers
            .values()
            .filter(|p| query.category.is_none_or(|c| p.manifest.categories.contains(&c)))
            .filter(|p| {
                if words.is_empty() {
                    return true;
                }
                let m = &p.manifest;
                let haystack = format!(
                    "{} {} {} {}",
                    m.name,
                    m.display_name,
                    m.description,
                    m.categories.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" ")
                )
                .to_lowercase();
                words.iter().all(|word| haystack.contains(word.as_str()))
            })
            .collect();
        let popularity = |p: &Arc<Provider>| installs.get(p.name()).copied().unwrap_or(0);
        match query.sort {
            Sort::Name => matches.sort_by(|a, b| a.name().cmp(b.name())),
            Sort::Popularity => {
                matches.sort_by(|a, b| popularity(b).cmp(&popularity(a)).then_with(|| a.name().cmp(b.name())))
            }
            Sort::Category => matches.sort_by(|a, b| {
                a.manifest.categories[0]
                    .as_str()
                    .cmp(b.manifest.categories[0].as_str())
                    .then_with(|| a.name().cmp(b.name()))
            }),
        }
        let more = matches.len() > query.offset + query.limit;
        let page = matches.into_iter().skip(query.offset).take(query.limit).cloned().collect();
        (page, more)
    }
}
