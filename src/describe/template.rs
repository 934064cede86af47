//! [`PromptTemplate`]: the text that asks the language model to write, with placeholders filled
//! from the classifier's most probable classes.

use super::ClassScore;
use crate::error::{Error, Result};

/// The placeholders a [`PromptTemplate`] knows, as they are written.
pub const PLACEHOLDERS: [&str; 4] = ["{class}", "{probability}", "{classes}", "{names}"];

/// One part of a parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    /// `{class}`: the most probable class's name.
    Class,
    /// `{probability}`: its probability as a percentage (`"87 %"`).
    Probability,
    /// `{classes}`: every top class with its percentage (`"palace (30 %), monastery (12 %)"`).
    Classes,
    /// `{names}`: every top class's name (`"palace, monastery"`).
    Names,
}

/// A prompt with placeholders, checked when it is parsed:
///
/// | placeholder | becomes |
/// |---|---|
/// | `{class}` | the most probable class's name: `palace` |
/// | `{probability}` | its probability: `30 %` |
/// | `{classes}` | the top classes with their probabilities: `palace (30 %), monastery (12 %)` |
/// | `{names}` | the top classes' names: `palace, monastery` |
///
/// `{{` and `}}` write literal braces. Percentages have no decimals from 1 % up and one below
/// (`0.4 %`).
///
/// ```
/// use handgrad::describe::{ClassScore, PromptTemplate};
/// let t = PromptTemplate::new("A {class} ({probability}); maybe {classes}. {{sic}}")?;
/// let top = [ClassScore::new(698, "palace", 0.30), ClassScore::new(663, "monastery", 0.12)];
/// assert_eq!(t.render(&top)?, "A palace (30 %); maybe palace (30 %), monastery (12 %). {sic}");
/// assert!(PromptTemplate::new("A {colour} photo").is_err());
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTemplate {
    source: String,
    pieces: Vec<Piece>,
}

impl PromptTemplate {
    /// Parses a template.
    ///
    /// # Errors
    /// [`Error::Config`] for a placeholder other than those in [`PLACEHOLDERS`] (naming it and
    /// the allowed ones), an unclosed `{`, or a lone `}`.
    pub fn new(source: &str) -> Result<Self> {
        let err = |value: &str, expected: &str| {
            Error::config(
                "PromptTemplate",
                "template",
                format!("{source:?} ({value})"),
                expected.to_string(),
            )
        };
        let allowed = format!(
            "placeholders among {} ({{{{ and }}}} for literal braces)",
            PLACEHOLDERS.join(", ")
        );
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => return Err(err(&format!("a lone '}}' at byte {i}"), &allowed)),
                '{' => {
                    let rest = &source[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(err(&format!("an unclosed '{{' at byte {i}"), &allowed));
                    };
                    let name = &rest[..end];
                    let piece = match name {
                        "class" => Piece::Class,
                        "probability" => Piece::Probability,
                        "classes" => Piece::Classes,
                        "names" => Piece::Names,
                        _ => {
                            return Err(err(
                                &format!("the unknown placeholder {{{name}}}"),
                                &allowed,
                            ))
                        }
                    };
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(piece);
                    // skip the name and the closing brace
                    while chars.next_if(|&(j, _)| j <= i + 1 + end).is_some() {}
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(PromptTemplate {
            source: source.to_string(),
            pieces,
        })
    }

    /// The template as it was written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Fills the placeholders from the top classes, most probable first.
    ///
    /// # Errors
    /// [`Error::Shape`] for an empty `top`.
    pub fn render(&self, top: &[ClassScore]) -> Result<String> {
        let Some(best) = top.first() else {
            return Err(Error::shape(
                "PromptTemplate::render",
                "at least one class",
                &[0],
            ));
        };
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Class => out.push_str(&best.name),
                Piece::Probability => out.push_str(&percent(best.probability)),
                Piece::Classes => out.push_str(
                    &top.iter()
                        .map(|c| format!("{} ({})", c.name, percent(c.probability)))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                Piece::Names => out.push_str(
                    &top.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            }
        }
        Ok(out)
    }
}

/// A probability as a percentage: `"30 %"` from 1 % up, `"0.4 %"` below.
pub fn percent(p: f32) -> String {
    let v = 100.0 * p;
    if v >= 0.95 {
        format!("{v:.0} %")
    } else {
        format!("{v:.1} %")
    }
}
