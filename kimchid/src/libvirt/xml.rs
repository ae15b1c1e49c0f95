//! A small XML writer for libvirt definitions: every attribute value and text is
//! escaped here, so caller input can never change the document's structure.

use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    name: &'static str,
    attrs: Vec<(&'static str, String)>,
    children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn new(name: &'static str) -> Self {
        Element {
            name,
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn attr(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attrs.push((name, value.into()));
        self
    }

    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// `<name>text</name>`, the most common shape in libvirt XML.
    pub fn leaf(name: &'static str, text: impl Into<String>) -> Self {
        Element::new(name).text(text)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        for (name, value) in &self.attrs {
            let _ = write!(out, " {name}=\"{}\"", escape(value));
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write(out),
                Node::Text(t) => out.push_str(&escape(t)),
            }
        }
        let _ = write!(out, "</{}>", self.name);
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nested_elements_and_attributes() {
        let xml = Element::new("pool")
            .attr("type", "dir")
            .child(Element::leaf("name", "p1"))
            .child(Element::new("target").child(Element::leaf("path", "/srv/p1")))
            .render();
        assert_eq!(
            xml,
            "<pool type=\"dir\"><name>p1</name><target><path>/srv/p1</path></target></pool>"
        );
    }

    #[test]
    fn hostile_input_stays_text() {
        let evil = "x</name><devices><disk/></devices><name>\"'&";
        let xml = Element::new("domain")
            .attr("type", evil)
            .child(Element::leaf("name", evil))
            .render();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.attribute("type"), Some(evil));
        assert_eq!(root.children().count(), 1);
        assert_eq!(root.first_child().unwrap().text(), Some(evil));
    }
}
