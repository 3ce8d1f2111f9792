//! Stop sequences enforced by the proxy, for every wire.
//!
//! The Responses API has no `stop` parameter and Chat Completions takes at most four, while an
//! Anthropic client may send any number. So the translation watches the text itself: the text
//! is cut before the first match, `stop_reason` becomes `stop_sequence` with the sequence that
//! matched, and nothing generated after it reaches the client.
//!
//! "First" is the match that generation completes first: the one whose last byte comes
//! earliest (for `["abc", "b"]` and the text `abc`, `b` stops it, leaving `a`); among matches
//! ending at the same byte the longest wins. In a stream, [`StopScanner`] holds back only the
//! bytes at the end of the text that could still begin a match, and lets everything else out
//! at once.

use std::borrow::Cow;

use crate::translate::anthropic::ContentBlock;

/// Where the first stop sequence in `text` starts, and which one it is.
pub(crate) fn find_stop<'s>(text: &str, sequences: &'s [String]) -> Option<(usize, &'s str)> {
    sequences
        .iter()
        .filter(|sequence| !sequence.is_empty())
        .filter_map(|sequence| {
            text.find(sequence.as_str())
                .map(|at| (at, sequence.as_str()))
        })
        .min_by_key(|(at, sequence)| (at + sequence.len(), usize::MAX - sequence.len()))
}

/// Cuts a whole answer at the first stop sequence in its text blocks: that block is cut
/// before the match (and dropped when nothing is left of it), every later block is dropped.
/// Returns the sequence that matched.
pub(crate) fn cut_blocks(
    blocks: &mut Vec<ContentBlock<'_>>,
    sequences: &[String],
) -> Option<String> {
    if sequences.iter().all(String::is_empty) {
        return None;
    }
    for position in 0..blocks.len() {
        let ContentBlock::Text { text } = &mut blocks[position] else {
            continue;
        };
        let Some((at, sequence)) = find_stop(text, sequences) else {
            continue;
        };
        let sequence = sequence.to_owned();
        match text {
            Cow::Borrowed(borrowed) => *borrowed = &borrowed[..at],
            Cow::Owned(owned) => owned.truncate(at),
        }
        let keep = if text.is_empty() {
            position
        } else {
            position + 1
        };
        blocks.truncate(keep);
        return Some(sequence);
    }
    None
}

/// What one piece of streamed text gives after stop-sequence scanning.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Text that may go to the client now.
    pub(crate) text: String,
    /// The stop sequence that matched: the stream must end after `text`.
    pub(crate) stopped: Option<String>,
}

/// Scans streamed text for stop sequences, holding back only what could begin a match.
#[derive(Debug)]
pub(crate) struct StopScanner {
    sequences: Vec<String>,
    longest: usize,
    held: String,
}

impl StopScanner {
    /// A scanner, or `None` when there is nothing to look for.
    pub(crate) fn new(sequences: &[String]) -> Option<Self> {
        let sequences: Vec<String> = sequences
            .iter()
            .filter(|sequence| !sequence.is_empty())
            .cloned()
            .collect();
        let longest = sequences.iter().map(String::len).max()?;
        Some(Self {
            sequences,
            longest,
            held: String::new(),
        })
    }

    /// Feeds the next piece of text.
    pub(crate) fn push(&mut self, text: &str) -> Scanned {
        self.held.push_str(text);
        if let Some((at, sequence)) = find_stop(&self.held, &self.sequences) {
            let stopped = Some(sequence.to_owned());
            self.held.truncate(at);
            return Scanned {
                text: std::mem::take(&mut self.held),
                stopped,
            };
        }
        let keep = self.could_begin_a_match();
        let text = if keep == 0 {
            std::mem::take(&mut self.held)
        } else {
            let rest = self.held.split_off(self.held.len() - keep);
            std::mem::replace(&mut self.held, rest)
        };
        Scanned {
            text,
            stopped: None,
        }
    }

    /// The text is over (its block ends): whatever was held back goes out.
    pub(crate) fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The length of the longest end of the held text that is the start of a sequence.
    fn could_begin_a_match(&self) -> usize {
        let len = self.held.len();
        (1..self.longest.min(len + 1))
            .rev()
            .find(|&k| {
                self.held.is_char_boundary(len - k)
                    && self
                        .sequences
                        .iter()
                        .any(|sequence| sequence.starts_with(&self.held[len - k..]))
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_first_completed_match_wins() {
        let s = seqs(&["abc", "b"]);
        assert_eq!(find_stop("xabc", &s), Some((2, "b")));
        let s = seqs(&["bc", "abc"]);
        assert_eq!(find_stop("xabc", &s), Some((1, "abc")));
        assert_eq!(find_stop("none here", &s), None);
        assert_eq!(find_stop("anything", &seqs(&[""])), None);
    }

    #[test]
    fn blocks_are_cut_and_later_ones_dropped() {
        let text = |t: &'static str| ContentBlock::Text { text: t.into() };
        let tool = ContentBlock::ToolUse {
            id: "t".into(),
            name: "f".into(),
            input: serde_json::json!({}).into(),
        };
        let mut blocks = vec![text("one"), text("two END three"), tool.clone()];
        assert_eq!(cut_blocks(&mut blocks, &seqs(&["END"])), Some("END".into()));
        assert_eq!(blocks, vec![text("one"), text("two ")]);

        // A match at the very start leaves nothing of its block.
        let mut blocks = vec![text("END"), tool.clone()];
        assert_eq!(
            cut_blocks(&mut blocks, &seqs(&["X", "END"])),
            Some("END".into())
        );
        assert!(blocks.is_empty());

        let mut blocks = vec![text("fine"), tool];
        assert_eq!(cut_blocks(&mut blocks, &seqs(&["END"])), None);
        assert_eq!(blocks.len(), 2);
    }

    fn run(pieces: &[&str], sequences: &[&str]) -> (Vec<String>, String, Option<String>) {
        let mut scanner = StopScanner::new(&seqs(sequences)).expect("sequences");
        let mut outs = Vec::new();
        for piece in pieces {
            let scanned = scanner.push(piece);
            outs.push(scanned.text);
            if let Some(stop) = scanned.stopped {
                return (outs.clone(), outs.concat(), Some(stop));
            }
        }
        outs.push(scanner.flush());
        (outs.clone(), outs.concat(), None)
    }

    #[test]
    fn only_a_possible_match_is_held_back() {
        let (outs, all, stop) = run(&["Hello </an", "swer> tail"], &["</answer>"]);
        assert_eq!(outs[0], "Hello ");
        assert_eq!(
            (all.as_str(), stop.as_deref()),
            ("Hello ", Some("</answer>"))
        );

        // A false start is released as soon as it cannot match any more.
        let (outs, all, stop) = run(&["a </a", "b> c"], &["</answer>"]);
        assert_eq!(outs, ["a ", "</ab> c", ""]);
        assert_eq!((all.as_str(), stop), ("a </ab> c", None));
    }

    #[test]
    fn matches_at_the_start_and_among_several() {
        let (_, all, stop) = run(&["STOP and more"], &["STOP"]);
        assert_eq!((all.as_str(), stop.as_deref()), ("", Some("STOP")));
        let (_, all, stop) = run(&["x", "y", "zz"], &["yz", "zz", "q"]);
        assert_eq!((all.as_str(), stop.as_deref()), ("x", Some("yz")));
        let (_, all, stop) = run(&["nothing", " matches"], &["yz", "q!"]);
        assert_eq!((all.as_str(), stop), ("nothing matches", None));
    }

    #[test]
    fn any_split_gives_the_same_text() {
        let text = "héllo wörld </stop> after";
        for sequences in [&["</stop>"][..], &["wörld", "</"][..], &["zzz"][..]] {
            let whole = run(&[text], sequences);
            for at in (0..=text.len()).filter(|at| text.is_char_boundary(*at)) {
                let (a, b) = text.split_at(at);
                let split = run(&[a, b], sequences);
                assert_eq!(
                    (split.1, split.2),
                    (whole.1.clone(), whole.2.clone()),
                    "{at}"
                );
            }
        }
    }

    #[test]
    fn no_sequences_no_scanner() {
        assert!(StopScanner::new(&[]).is_none());
        assert!(StopScanner::new(&seqs(&[""])).is_none());
    }
}
