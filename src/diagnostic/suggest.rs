//! "Did you mean" suggestions for misspelt names.

/// The candidate closest to `written`, if it is close enough to be a plausible typo.
/// Case and `_`/`-` differences count as exact matches (`weight_decay` → `weight-decay`).
pub fn suggest<'a>(
    written: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let written_norm = norm(written);
    let limit = match written.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        6..=9 => 2,
        _ => 3,
    };
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if candidate == "*" || candidate == written {
            continue;
        }
        let distance = if norm(candidate) == written_norm {
            0
        } else {
            strsim::damerau_levenshtein(&written_norm, &norm(candidate))
        };
        if distance <= limit.max(usize::from(distance == 0))
            && best.is_none_or(|(d, _)| distance < d)
        {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// `a, b, c` with backticks, for listing what is allowed.
pub fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::suggest;

    #[test]
    fn typos_and_spellings() {
        let names = ["train", "optimizer", "weight-decay", "lr"];
        assert_eq!(suggest("trian", names), Some("train"));
        assert_eq!(suggest("optimzer", names), Some("optimizer"));
        assert_eq!(suggest("weight_decay", names), Some("weight-decay"));
        assert_eq!(suggest("Weight-Decay", names), Some("weight-decay"));
        assert_eq!(suggest("xy", names), None);
        assert_eq!(suggest("model", names), None);
    }
}
