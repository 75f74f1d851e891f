//! GPU names as providers and drivers spell them ("A100 SXM4", "a100_sxm4",
//! "NVIDIA A100-SXM4-80GB") reduced to one comparable form.

/// Words that only say who made the card; pynvml reports "NVIDIA GeForce RTX 4090" where Vast
/// says "RTX 4090", and both must match `gpu="RTX 4090"`.
const VENDOR_WORDS: [&str; 6] = ["NVIDIA", "GEFORCE", "TESLA", "QUADRO", "AMD", "INSTINCT"];

/// A normalized GPU name: upper case with spaces, underscores and hyphens removed, vendor words
/// dropped, and where the original separators fell (so "A100 80GB" is still an A100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuName {
    pub joined: String,
    boundaries: Vec<usize>,
}

impl GpuName {
    pub fn new(raw: &str) -> GpuName {
        let mut tokens: Vec<String> = raw
            .split(|c: char| c == ' ' || c == '_' || c == '-' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(str::to_uppercase)
            .collect();
        let vendor = tokens
            .iter()
            .take_while(|t| VENDOR_WORDS.contains(&t.as_str()))
            .count();
        // A name that is only vendor words ("NVIDIA") keeps them rather than becoming empty.
        if vendor < tokens.len() {
            tokens.drain(..vendor);
        }
        let mut joined = String::new();
        let mut boundaries = Vec::with_capacity(tokens.len());
        for t in &tokens {
            joined.push_str(t);
            boundaries.push(joined.len());
        }
        GpuName { joined, boundaries }
    }

    /// Exact match after normalisation: "a100_sxm4" == "A100 SXM4" == "A100-SXM4".
    pub fn same(&self, other: &GpuName) -> bool {
        self.joined == other.joined
    }

    /// Whether this (an offer's name) belongs to `family`: equal, or starting with it where the
    /// next character is not a digit ("A100" covers "A100 SXM4" but "A10" does not cover
    /// "A100"), or where the family ends at a word break ("A100" covers "A100 80GB PCIe").
    pub fn in_family(&self, family: &GpuName) -> bool {
        let f = family.joined.as_str();
        if f.is_empty() || !self.joined.starts_with(f) {
            return false;
        }
        match self.joined[f.len()..].chars().next() {
            None => true,
            Some(c) if !c.is_ascii_digit() => true,
            Some(_) => self.boundaries.contains(&f.len()),
        }
    }
}
