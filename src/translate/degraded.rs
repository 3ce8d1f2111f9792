//! What a translation could not carry over faithfully.

/// Tags naming what a translation could not carry over faithfully (SPEC: "degrade"), sent
/// to the client in the `x-llm-bridge-degraded` header.
///
/// ```
/// use tower_llm_bridge::translate::Degradations;
///
/// let mut degraded = Degradations::default();
/// degraded.add("top_k");
/// degraded.add("top_k");
/// degraded.add("document");
/// assert_eq!(degraded.to_header_value(), "top_k,document");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Degradations {
    tags: Vec<&'static str>,
}

impl Degradations {
    /// Records a tag (once).
    pub fn add(&mut self, tag: &'static str) {
        if !self.tags.contains(&tag) {
            self.tags.push(tag);
        }
    }

    /// Adds all of `other`'s tags.
    pub fn extend(&mut self, other: &Degradations) {
        for tag in &other.tags {
            self.add(tag);
        }
    }

    /// Whether nothing was lost.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The tags, in the order they were first recorded.
    pub fn tags(&self) -> &[&'static str] {
        &self.tags
    }

    /// The comma-separated header value.
    pub fn to_header_value(&self) -> String {
        self.tags.join(",")
    }
}
