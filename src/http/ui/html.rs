//! HTML written as strings. The one rule that keeps the console safe from what it shows: markup
//! is only ever `&'static str` (`Html::raw`), and every value — from the store, the policy or a
//! request — goes through `Html::text`, which escapes it. Nothing a batch carries can become
//! markup or break out of an attribute.

use std::fmt::{Display, Write};

/// A fragment of a page under construction.
#[derive(Default)]
pub struct Html(String);

impl Html {
    pub fn new() -> Html {
        Html(String::with_capacity(4096))
    }

    /// Markup written by this module (a literal: it cannot hold a value).
    pub fn raw(&mut self, markup: &'static str) -> &mut Html {
        self.0.push_str(markup);
        self
    }

    /// A value, escaped for text and for quoted attribute values alike.
    pub fn text(&mut self, value: impl Display) -> &mut Html {
        let mut plain = String::new();
        // Writing into a String cannot fail.
        let _ = write!(plain, "{value}");
        escape_into(&plain, &mut self.0);
        self
    }

    /// Another fragment, already built by these rules.
    pub fn append(&mut self, other: Html) -> &mut Html {
        self.0.push_str(&other.0);
        self
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// `& < > " '` as entities: enough for element text and double- or single-quoted attributes.
fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_markup_is_not() {
        let mut h = Html::new();
        h.raw("<td title=\"")
            .text("\"><script>alert('x')</script>&")
            .raw("\">");
        assert_eq!(
            h.into_string(),
            "<td title=\"&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;\">"
        );
    }
}
